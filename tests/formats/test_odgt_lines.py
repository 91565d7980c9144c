"""odgt (JSON lines): lines end at newlines only."""

import json

from harness.formats.odgt import read_lines


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    p = tmp_path / "a.odgt"
    p.write_text(json.dumps({"ID": "a\u2028b", "gtboxes": []}, ensure_ascii=False) + "\r\n"
                 + json.dumps({"ID": "c", "gtboxes": []}) + "\n", encoding="utf-8")
    assert [(n, r["ID"]) for n, r in read_lines(p)] == [(1, "a\u2028b"), (2, "c")]


def test_convert_crowdhuman_to_a_directory_is_an_error_and_leaves_nothing(tmp_path, run_cli):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "img" / "x.jpg")
    odgt = tmp_path / "a.odgt"
    odgt.write_text(json.dumps({"ID": "x", "gtboxes": [{"tag": "person", "fbox": [1, 1, 5, 5]}]}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli("data", "convert-crowdhuman", odgt, tmp_path / "img", "--out", out)
    assert code == 2 and "is a directory" in err and list(out.iterdir()) == [] and not list(tmp_path.glob("*.tmp"))
    huge = tmp_path / "b.odgt"
    huge.write_text(json.dumps({"ID": "x", "gtboxes": [{"tag": "person", "fbox": [1, 1, 1e308, 5]}]}) + "\n")
    code, _, err = run_cli("data", "convert-crowdhuman", huge, tmp_path / "img", "--out", tmp_path / "c.json")
    assert code == 2 and "fbox" in err and not (tmp_path / "c.json").exists()
    code, _, _ = run_cli("data", "convert-crowdhuman", odgt, tmp_path / "img", "--out", tmp_path / "ok.json")
    assert code == 0 and json.loads((tmp_path / "ok.json").read_text())["annotations"][0]["bbox"] == [1, 1, 5, 5]


def test_an_image_id_that_leaves_the_image_folder_is_refused(tmp_path, run_cli):
    from PIL import Image

    for folder in ("img", "other"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (32, 24)).save(tmp_path / "other" / "img.jpg")  # exists, but outside the image folder
    for rid in ("../other/img", "/etc/hostname", "a/../../other/img"):
        odgt = tmp_path / "a.odgt"
        odgt.write_text(json.dumps({"ID": rid, "gtboxes": [{"tag": "person", "fbox": [1, 1, 5, 5]}]}) + "\n")
        code, out, err = run_cli("data", "convert-crowdhuman", odgt, tmp_path / "img", "--out", tmp_path / "o.json")
        assert code == 2 and out == "", err
        assert err == f"error: {odgt}:1: ID: image ID {rid!r} is not a name inside the image folder\n"
        assert not (tmp_path / "o.json").exists() and not list(tmp_path.rglob("*.tmp"))
