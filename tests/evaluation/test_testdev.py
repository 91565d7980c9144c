"""`harness evaluate coco --testdev OUT.zip`: the COCO server's upload file from a run's
detections on test-dev, checked against test-dev's image info; bad input is one line, exit 2."""

import json
import zipfile

import pytest

INFO = {"info": {"description": "COCO 2017 Dataset"},
        "images": [{"id": 1, "width": 640, "height": 480, "file_name": "000000000001.jpg"},
                   {"id": 7, "width": 500, "height": 375, "file_name": "000000000007.jpg"},
                   {"id": 9, "width": 320, "height": 240, "file_name": "000000000009.jpg"}],
        "categories": [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]}
DETS = [{"image_id": 1, "category_id": 90, "bbox": [10.5, 20.0, 30.25, 40.0], "score": 0.91},
        {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.125}]


def _files(tmp_path, info=INFO, dets=DETS):
    (tmp_path / "info.json").write_text(json.dumps(info))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return tmp_path / "info.json", tmp_path / "dets.json"


def test_the_upload_file_is_the_servers_json_in_a_zip(run_cli, tmp_path):
    info, dets = _files(tmp_path)
    out = tmp_path / "fcos.zip"
    code, stdout, err = run_cli("evaluate", "coco", "--gt", info, "--dets", dets, "--testdev", out, "--alg", "fcos-r50")
    assert code == 0, err
    name = "detections_test-dev2017_fcos-r50_results.json"
    assert stdout.strip() == f"{out}: {name}, 2 detections on 2 of 3 images"
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == [name]
        assert json.loads(z.read(name)) == DETS  # COCO category ids, xywh boxes, scores, exactly as detected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize(("case", "message"), [
    ("no dets file", "dets.json: cannot read file"),
    ("no info file", "info.json: cannot read file"),
    ("val instances", "info.json: annotations: has annotations: a labelled split's instances file, not test-dev's"),
    ("other images", "dets.json: image_id: 1 image id(s) not in "),
    ("unknown category", "dets.json: [0].category_id: unknown category id 91"),
    ("bad alg", "--alg: letters, digits and '-' only"),
    ("not a zip", "--testdev: the upload file is a .zip"),
    ("crowdhuman", "--testdev: the COCO test-dev upload takes `harness evaluate coco`"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, case, message):
    info, dets = {**INFO}, list(DETS)
    if case == "val instances":
        info["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
                                "iscrowd": 0}]
    if case == "other images":
        dets.append({**DETS[0], "image_id": 139})
    if case == "unknown category":
        dets[0] = {**DETS[0], "category_id": 91}
    info_path, dets_path = _files(tmp_path, info, dets)
    if case == "no dets file":
        dets_path.unlink()
    if case == "no info file":
        info_path.unlink()
    out = tmp_path / ("out.json" if case == "not a zip" else "out.zip")
    code, _, err = run_cli("evaluate", "crowdhuman" if case == "crowdhuman" else "coco", "--gt", info_path,
                           "--dets", dets_path, "--testdev", out, "--alg", "my_alg" if case == "bad alg" else "fcos")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()
