"""Spec loading: strict keys, line numbers, and the semantic checks."""

import pytest

from harness.spec import SpecError, expand, load_spec
from tests.conftest import MINI_SPEC as MINI


def errors_of(path):
    with pytest.raises(SpecError) as info:
        expand(load_spec(path))
    return [str(p) for p in info.value.problems]


def test_minimal_spec_loads(mini_spec):
    cells = expand(load_spec(mini_spec()))
    assert [c.id for c in cells] == ["A/synthetic/0", "A/synthetic/1", "B/synthetic/0",
                                     "B/synthetic/1"]
    assert cells[0].config.model.predictor.assigner.name == "fcos"
    assert cells[0].config.eval.nms is True
    assert cells[2].config.model.predictor.assigner.name == "poto"
    assert cells[2].config.eval.nms is False


def test_unknown_key_in_base_names_file_line_and_path(mini_spec):
    text = MINI.replace("backbone: {name: tiny}", "backbone: {name: tiny, nme: x}")
    path = mini_spec(text)
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:5: base.model.backbone.nme: unknown key")
    assert "known: name, weights" in msg


def test_unknown_key_in_axis_value_points_at_the_axis(mini_spec):
    text = MINI.replace("poto: {}", "poto: {train.max_itr: 5}")
    path = mini_spec(text)
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:16: axes.assigner.poto.train.max_itr: unknown key")


def test_wrong_type(mini_spec):
    path = mini_spec(MINI.replace("max_iter: 10", "max_iter: ten"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:11: base.train.max_iter:")
    assert "integer" in msg


def test_missing_field_names_the_key(mini_spec):
    path = mini_spec(MINI.replace(", base_lr: 0.01", ""))
    msgs = errors_of(path)
    assert any("train.base_lr: missing required key" in m for m in msgs), msgs
    assert all(m.startswith(str(path)) for m in msgs)


def test_unknown_axis_value(mini_spec):
    path = mini_spec(MINI.replace("{label: B, assigner: poto}", "{label: B, assigner: potto}"))
    (msg,) = errors_of(path)
    assert msg == f"{path}:19: rows[1].assigner: unknown value 'potto' (known: fcos, poto)"


def test_unknown_literal_value(mini_spec):
    path = mini_spec(MINI.replace("backbone: {name: tiny}", "backbone: {name: resnet5}"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:5: base.model.backbone.name: unknown value 'resnet5'")
    assert "'resnet50'" in msg


def test_unknown_assigner_name(mini_spec):
    path = mini_spec(MINI.replace("assigner: {name: poto}", "assigner: {name: pot}"))
    msgs = errors_of(path)
    assert any(m.startswith(f"{path}:7: base.model.predictor.assigner.name: unknown value 'pot'")
               for m in msgs), msgs


def test_unknown_row_key(mini_spec):
    path = mini_spec(MINI.replace("{label: A, assigner: fcos}", "{label: A, assigner: fcos, tabel: x}"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:18: rows[0].tabel: unknown key")


def test_duplicate_row_label(mini_spec):
    path = mini_spec(MINI.replace("label: B", "label: A"))
    (msg,) = errors_of(path)
    assert msg == f"{path}:19: rows[1].label: duplicate row label 'A' (also rows[0])"


def test_yaml_syntax_error(mini_spec):
    path = mini_spec(MINI.replace("eval: {nms: false}", "eval: {nms: false"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:") and "YAML syntax error" in msg


def test_duplicate_yaml_key(mini_spec):
    path = mini_spec(MINI.replace("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"))
    (msg,) = errors_of(path)
    assert msg == f"{path}:21: seeds: duplicate key (first at line 20)"


def test_unknown_table_and_compare_to(mini_spec):
    path = mini_spec(MINI.replace("{label: A, assigner: fcos}",
                                  "{label: A, assigner: fcos, table: t, compare_to: Z}"))
    msgs = errors_of(path)
    assert f"{path}:18: rows[0].table: unknown table 't' (known: none declared under 'tables')" in msgs
    assert f"{path}:18: rows[0].compare_to: unknown row 'Z' (known: A, B)" in msgs


def test_paper_metric_names_are_checked(mini_spec):
    path = mini_spec(MINI.replace("{label: A, assigner: fcos}",
                                  "{label: A, assigner: fcos, paper: {mAP: 1.0}}"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:18: rows[0].paper.mAP")


def test_semantic_validator_message(mini_spec):
    path = mini_spec(MINI.replace("{max_iter: 10, base_lr: 0.01}",
                                  "{max_iter: 10, base_lr: 0.01, steps: [20]}"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:11: base.train: step 20 is not below max_iter 10")


def test_missing_file():
    with pytest.raises(SpecError, match="cannot read file"):
        load_spec("does/not/exist.yaml")


def test_axis_named_like_a_row_field(mini_spec):
    path = mini_spec(MINI.replace("  assigner:\n    fcos", "  note:\n    fcos")
                     .replace("assigner: fcos}", "note: fcos}").replace("assigner: poto}", "note: poto}"))
    msgs = errors_of(path)
    assert any("axes.note: axis name 'note' is taken by a row field" in m for m in msgs), msgs


def test_product_mode_with_include_exclude(mini_spec):
    text = """\
name: prod
base:
  model: {num_classes: 2, backbone: {name: tiny}, predictor: {assigner: {name: poto}}}
  data: {name: synthetic, synthetic: {}}
  train: {max_iter: 5, base_lr: 0.1}
  eval: {nms: false}
axes:
  assigner:
    fcos: {model.predictor.assigner: {name: fcos}}
    poto:
  filter:
    none:
    3dmf: {model.predictor.filter: 3dmf}
exclude:
  - {assigner: fcos, filter: 3dmf}
seeds: [0]
"""
    cells = expand(load_spec(mini_spec(text)))
    assert [c.row for c in cells] == ["fcos-none", "poto-none", "poto-3dmf"]
    assert cells[2].config.model.predictor.filter == "3dmf"



def test_table_names_cannot_leave_the_output_folder(tmp_path):
    # table names become plot file names: a path in one is rejected with its line
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nbase: {model: {num_classes: 1}}\ntables:\n"
                 "  x/../../../../elsewhere/y: {title: a, layout: quickstart}\n")
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    assert f"{p}:4" in str(exc.value) and "tables.x/../../../../elsewhere/y" in str(exc.value)


@pytest.mark.parametrize("change, where", [
    (("seeds: [0, 1]", "seeds: [-1]"), "seeds[0]"),
    (("seeds: [0, 1]", "seeds: [1180591620717411303424]"), "seeds[0]"),
    (("base_lr: 0.01", "base_lr: .inf"), "train.base_lr"),
    (("base_lr: 0.01", "base_lr: .nan"), "train.base_lr"),
])
def test_out_of_range_seeds_and_non_finite_numbers_are_spec_errors(mini_spec, change, where):
    path = mini_spec(MINI.replace(*change))
    with pytest.raises(SpecError) as exc:
        expand(load_spec(path))
    assert where in str(exc.value) and str(path) in str(exc.value)


def test_non_finite_override_is_rejected(mini_spec):
    from harness.spec import parse_set
    with pytest.raises(SpecError) as exc:
        expand(load_spec(mini_spec()), [parse_set("train.momentum=.nan")])
    assert "train.momentum" in str(exc.value)


LAUGHS = ("name: x\nbase:\n  a: &a [1,1,1,1,1,1,1,1,1,1]\n"
          + "".join(f"  {n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True))
          + "  h: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n")


@pytest.mark.parametrize("raw, message", [
    (LAUGHS.encode(), "alias bomb"),
    (b"name: x\nbase:\n  x: &x [*x]\n", "an alias that contains itself"),
    (b"name: x\nbase:\n  x: " + b"[" * 20000 + b"]" * 20000 + b"\n", "levels deep"),
    ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 (byte 9"),
    ("name: x\n".encode("utf-16"), "UTF-16"),
    (b"name: x\x00\n", "NUL byte"),
    (b"name: x\n# " + b"x" * (1 << 20) + b"\n", "larger than 1,048,576 bytes"),
    (b"name: a\x07b\n", "special characters are not allowed (U+0007)"),
])
def test_hostile_yaml_is_one_clear_line(tmp_path, raw, message):
    p = tmp_path / "s.yaml"
    p.write_bytes(raw)
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    text = str(exc.value)
    assert message in text and str(p) in text and "\n" not in text


def test_a_boolean_is_not_a_number(mini_spec):
    with pytest.raises(SpecError) as exc:
        expand(load_spec(mini_spec(MINI.replace("max_iter: 10", "max_iter: true"))))
    assert "max_iter: expected a number, got true" in str(exc.value)


def test_seed_in_an_override_file_and_empty_excludes_are_errors(mini_spec, tmp_path):
    from harness.spec import load_set_file

    f = tmp_path / "o.yaml"
    f.write_text("train:\n  max_iter: 4\nseed: 3\n")
    with pytest.raises(SpecError) as exc:
        load_set_file(str(f))
    assert f"{f}:3" in str(exc.value) and "seeds" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        load_spec(mini_spec(MINI + "exclude: [{}]\n"))
    assert "exclude" in str(exc.value)


def test_a_resnet_with_group_norm_is_a_spec_error(mini_spec):
    path = mini_spec(MINI.replace("backbone: {name: tiny}", "backbone: {name: resnet18, norm: gn}"))
    with pytest.raises(SpecError) as exc:
        expand(load_spec(path))
    assert "model.backbone: norm: resnet18 supports frozen_bn or bn, not gn" in str(exc.value)


def test_axes_that_are_not_a_mapping_are_one_problem(mini_spec):
    path = mini_spec(MINI.replace("axes:\n  assigner:", "axes: [1, 2]\nx:\n  assigner:"))
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert len(exc.value.problems) == 1
    assert str(exc.value).endswith(": axes: must be a mapping: axis -> value -> overrides")


def test_a_seed_is_an_integer_not_a_string_or_float(mini_spec):
    with pytest.raises(SpecError) as exc:
        load_spec(mini_spec(MINI.replace("seeds: [0, 1]", "seeds: ['3', 1.0]")))
    assert [p.path for p in exc.value.problems] == ["seeds[0]", "seeds[1]"]


CLAIMS = MINI.replace("rows:\n", """tables:
  t:
    title: T
    layout: quickstart
    claims:
      - {row: B, post: nms_free, vs: A, vs_post: nms, metric: ap50}
      - {row: C, vs: A}
      - {row: A, vs: A}
      - {row: A, post: nms_free, vs: A, vs_post: nms, expect: differs, margin: 1}
rows:
""")


def test_claims_name_known_rows_and_two_sides(mini_spec):
    msgs = errors_of(mini_spec(CLAIMS))
    assert any(m.endswith("tables.t.claims[1].row: unknown row 'C' (known: A, B)") for m in msgs), msgs
    assert any("tables.t.claims[2]: a claim compares a row with itself" in m for m in msgs), msgs
    assert any("tables.t.claims[3].margin: a margin needs expect: better / worse" in m for m in msgs), msgs
    assert len(msgs) == 3


@pytest.mark.parametrize("claim, message", [
    ("{row: B, vs: A, expect: equivalent}", "claims[0].expect: equivalent needs a margin"),
    ("{row: B, vs: A, paired: true}", "claims[0].pairing: pairing different rows by seed needs its reason"),
    ("{row: A, post: nms, vs: A, vs_post: nms_free, paired: true, pairing: x}", "claims[0].paired: the same row"),
    ("{row: B, vs: A, pairing: same init}", "claims[0].pairing: a pairing reason without paired: true"),
    ("{row: B, vs: A, effect: -1}", "claims[0].effect"),
])
def test_new_claim_kinds_are_checked(mini_spec, claim, message):
    text = MINI.replace("rows:\n", f"tables:\n  t:\n    title: T\n    layout: quickstart\n    claims:\n      - {claim}\nrows:\n")
    (msg,) = errors_of(mini_spec(text))
    assert message in msg, msg


def test_new_claim_kinds_load(mini_spec):
    text = MINI.replace("rows:\n", "tables:\n  t:\n    title: T\n    layout: quickstart\n    claims:\n"
                        "      - {row: B, vs: A, expect: equivalent, margin: 0.5, effect: 0.2}\n"
                        "      - {row: B, vs: A, paired: true, pairing: one data order and init per seed}\n"
                        "      - {row: B, vs: A, expect: worse, margin: 1}\nrows:\n")
    claims = load_spec(mini_spec(text)).spec.tables["t"].claims
    assert [c.expect for c in claims] == ["equivalent", "better", "worse"] and claims[1].paired


def test_claims_are_presentation_not_part_of_a_run_key(mini_spec):
    plain = expand(load_spec(mini_spec(MINI.replace("rows:\n", "tables:\n  t: {title: T, layout: quickstart}\nrows:\n"))))
    claimed = expand(load_spec(mini_spec(CLAIMS.replace("      - {row: C, vs: A}\n      - {row: A, vs: A}\n", "")
                                         .replace(", expect: differs, margin: 1", ""), name="c.yaml")))
    assert [c.run_key for c in plain] == [c.run_key for c in claimed]
