"""`harness evaluate`: JSON output and every bad input exits 2 naming file and line/record."""

import json

import pytest

GT_ODGT = [
    {"ID": "a", "width": 100, "height": 80, "gtboxes": [
        {"tag": "person", "fbox": [0, 0, 10, 20]}, {"tag": "mask", "fbox": [50, 50, 20, 20]}]},
    {"ID": "b", "gtboxes": [{"tag": "person", "fbox": [5, 5, 30, 30]}]},
]
DT_ODGT = [
    {"ID": "a", "dtboxes": [{"box": [0, 0, 10, 20], "score": 0.9, "tag": 1},
                            {"box": [52, 52, 10, 10], "score": 0.8, "tag": 1}]},
    {"ID": "b", "width": 60, "height": 60,
     "dtboxes": [{"box": [5, 5, 30, 30], "score": 0.7, "tag": 1},
                 {"box": [40, 40, 5, 5], "score": 0.6, "tag": 1}]},
]


def write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_crowdhuman_json(run_cli, tmp_path):
    gt = write_lines(tmp_path / "gt.odgt", GT_ODGT)
    dt = write_lines(tmp_path / "dt.odgt", DT_ODGT)
    code, out, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", dt, "--json")
    assert code == 0, err
    m = json.loads(out)
    assert set(m) == {"ap50", "mmr", "recall", "n_images", "n_valid_gt", "n_dets"}
    # pooled: TP .9, (swallowed .8), TP .7, FP .6 -> AP = (1 - .5) * (1 + 1) / 2 = .5
    assert m["ap50"] == pytest.approx(0.5) and m["recall"] == 1.0
    assert (m["n_images"], m["n_valid_gt"], m["n_dets"]) == (2, 2, 4)


def test_crowdhuman_sizes_from_image_files(run_cli, tmp_path):
    from PIL import Image

    gt = write_lines(tmp_path / "gt.odgt", [{"ID": "c", "gtboxes": [{"tag": "person", "fbox": [0, 0, 5, 5]}]}])
    dt = write_lines(tmp_path / "dt.odgt", [{"ID": "c", "dtboxes": [{"box": [0, 0, 5, 5], "score": 1.0}]}])
    code, _, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", dt)
    assert code == 2 and "pass --images DIR" in err
    (tmp_path / "img").mkdir()
    code, _, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", dt, "--images", tmp_path / "img")
    assert code == 2 and "missing image file" in err
    Image.new("RGB", (20, 10)).save(tmp_path / "img" / "c.jpg")
    code, out, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", dt, "--images", tmp_path / "img", "--json")
    assert code == 0, err
    assert json.loads(out)["recall"] == 1.0


def test_coco_json(run_cli, tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 3, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50],
                           "area": 2500, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(
        [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "score": 0.5}]))
    code, out, err = run_cli("evaluate", "coco", "--gt", tmp_path / "gt.json", "--dets",
                             tmp_path / "dt.json", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert list(m) == ["ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm", "arl"]
    assert m["ap"] == pytest.approx(1.0)


BAD_ODGT = [
    ("gt", '{"ID": "a", "gtboxes": []}\n{"ID": "b", "gtboxes": [}\n', "gt.odgt:2: malformed JSON"),
    ("gt", '{"ID": "a", "gtboxes": [{"tag": "person", "fbox": [0, 0, -1, 5]}]}\n',
     "gt.odgt:1: gtboxes[0].fbox: box with negative size"),
    ("dt", '{"ID": "zz", "dtboxes": []}\n', "dt.odgt:1: ID: detections for unknown image id 'zz'"),
    ("dt", "", "dt.odgt: empty detections file"),
    ("dt", '{"ID": "a", "dtboxes": [{"box": [0, 0, 1, 1]}]}\n', "dt.odgt:1: dtboxes[0].score: must be a finite number"),
    ("dt", '{"ID": "a", "dtboxes": [{"box": [0, 0, 1, -1], "score": 1}]}\n', "dt.odgt:1: dtboxes[0].box: box with negative size"),
]


@pytest.mark.parametrize("which, text, message", BAD_ODGT)
def test_crowdhuman_bad_input(run_cli, tmp_path, which, text, message):
    gt = write_lines(tmp_path / "gt.odgt", GT_ODGT)
    dt = write_lines(tmp_path / "dt.odgt", DT_ODGT)
    (gt if which == "gt" else dt).write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", dt, "--json")
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unreadable_file(run_cli, tmp_path):
    gt = write_lines(tmp_path / "gt.odgt", GT_ODGT)
    code, _, err = run_cli("evaluate", "crowdhuman", "--gt", gt, "--dets", tmp_path / "nope.odgt")
    assert code == 2 and "nope.odgt: cannot read file" in err


BAD_COCO = [
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5},\n {"image_id": 1,', "dt.json:2: malformed JSON"),
    ('[{"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}]', "dt.json: [0].image_id: detection for unknown image id 9"),
    ('[{"image_id": 1, "category_id": 3, "bbox": [0, 0, -1, 1], "score": 0.5}]', "dt.json: [0].bbox: box with negative size"),
    ("", "dt.json: empty file"),
]


@pytest.mark.parametrize("text, message", BAD_COCO)
def test_coco_bad_input(run_cli, tmp_path, text, message):
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 3, "name": "x"}],
          "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(text)
    code, out, err = run_cli("evaluate", "coco", "--gt", tmp_path / "gt.json", "--dets", tmp_path / "dt.json")
    assert code == 2
    assert message in err, err
    assert out == ""


def test_coco_bad_gt(run_cli, tmp_path):
    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 3, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1]}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text("[]")
    code, _, err = run_cli("evaluate", "coco", "--gt", tmp_path / "gt.json", "--dets", tmp_path / "dt.json")
    assert code == 2 and "gt.json: annotations[0].image_id: unknown image id 2" in err
