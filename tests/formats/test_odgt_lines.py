"""odgt (JSON lines): lines end at newlines only."""

import json

from harness.formats.odgt import read_lines


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    p = tmp_path / "a.odgt"
    p.write_text(json.dumps({"ID": "a\u2028b", "gtboxes": []}, ensure_ascii=False) + "\r\n"
                 + json.dumps({"ID": "c", "gtboxes": []}) + "\n", encoding="utf-8")
    assert [(n, r["ID"]) for n, r in read_lines(p)] == [(1, "a\u2028b"), (2, "c")]
