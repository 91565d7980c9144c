"""Typed overrides: parsing, schema checks, variant replacement, provenance in errors."""

import pytest

from harness.spec import SpecError, expand, load_set_file, load_spec, parse_set
from harness.spec.schema import Config
from tests.conftest import MINI_SPEC


def test_values_are_typed_by_the_schema():
    assert parse_set("train.base_lr=0.02").value == 0.02
    assert parse_set("train.base_lr=1e-3").value == "1e-3"  # YAML 1.1; pydantic makes it a float
    assert parse_set("train.steps=[3, 6]").value == [3, 6]
    assert parse_set("eval.nms=true").value is True
    assert parse_set("model.backbone.weights=null").value is None
    # a string field keeps the text even if it looks like a number
    assert parse_set("data.root=2017").value == "2017"
    assert parse_set("model.backbone.name=tiny").path == ("model", "backbone", "name")


def test_float_text_validates_to_float(mini_spec):
    cells = expand(load_spec(mini_spec()), [parse_set("train.base_lr=1e-3")])
    assert all(c.config.train.base_lr == pytest.approx(1e-3) for c in cells)


@pytest.mark.parametrize("item, fragment", [
    ("train.base_lrr=1", "unknown key 'base_lrr' under train (known: max_iter"),
    ("modle.num_classes=1", "unknown key 'modle' under the top level"),
    ("model.predictor.assigner.alphaa=1", "unknown key 'alphaa' under model.predictor.assigner"),
    ("train.base_lr", "expected KEY=VALUE"),
    ("seed=3", "a cell's seed comes from the spec's 'seeds'"),
])
def test_bad_paths(item, fragment):
    with pytest.raises(SpecError) as info:
        parse_set(item)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"--set {item}: ")
    assert fragment in str(problem)


def test_union_members_fields_are_reachable():
    # alpha exists on the POTO assigner only; the path check accepts any member of the union
    assert parse_set("model.predictor.assigner.alpha=0.5").value == 0.5
    assert parse_set("model.predictor.assigner.topk=7").value == 7


def test_wrong_type_from_cli_names_the_override(mini_spec):
    with pytest.raises(SpecError) as info:
        expand(load_spec(mini_spec()), [parse_set("train.max_iter=abc")])
    (problem,) = info.value.problems
    assert str(problem).startswith("--set train.max_iter=abc: Input should be a valid integer")


def test_changing_a_variant_name_replaces_the_section(mini_spec):
    cells = expand(load_spec(mini_spec()), [parse_set("model.predictor.assigner.name=atss")])
    assert {c.config.model.predictor.assigner.name for c in cells} == {"atss"}
    assert cells[0].config.model.predictor.assigner.topk == 9


def test_field_of_another_variant_is_rejected_by_validation(mini_spec):
    # 'alpha' exists in the schema (POTO) but not on the FCOS assigner of row A
    with pytest.raises(SpecError) as info:
        expand(load_spec(mini_spec()), [parse_set("model.predictor.assigner.alpha=0.5")])
    msgs = [str(p) for p in info.value.problems]
    assert any("--set model.predictor.assigner.alpha=0.5" in m and "unknown key" in m
               and "[cell A/" in m for m in msgs), msgs


def test_unknown_key_lists_the_fields_of_the_variant_that_rejected_it(mini_spec):
    # row A's FCOS assigner has no 'alpha': the "known" list is FCOS's, not every assigner's
    with pytest.raises(SpecError) as info:
        expand(load_spec(mini_spec()), [parse_set("model.predictor.assigner.alpha=0.5")])
    (msg,) = [str(p) for p in info.value.problems]
    known = msg.split("(known: ", 1)[1].split(")", 1)[0].split(", ")
    assert "alpha" not in known and {"name", "center_radius"} <= set(known), msg
    assert "[cell A/" in msg
    # row B's POTO assigner takes it
    cells = expand(load_spec(mini_spec()), [parse_set("model.predictor.assigner.alpha=0.5")], rows=("B",))
    assert {c.row for c in cells} == {"B"} and all(c.config.model.predictor.assigner.alpha == 0.5 for c in cells)


def test_set_file(tmp_path, mini_spec):
    f = tmp_path / "over.yaml"
    f.write_text("train:\n  base_lr: 0.05\n  max_iter: 20\neval.nms: true\n")
    overrides = load_set_file(str(f))
    assert {o.path for o in overrides} == {("train", "base_lr"), ("train", "max_iter"),
                                          ("eval", "nms")}
    cells = expand(load_spec(mini_spec()), overrides)
    assert all(c.config.train.base_lr == 0.05 and c.config.eval.nms for c in cells)


def test_set_file_unknown_key_names_file_and_line(tmp_path):
    f = tmp_path / "over.yaml"
    f.write_text("train:\n  base_lr: 0.05\n  max_itr: 20\n")
    with pytest.raises(SpecError) as info:
        load_set_file(str(f))
    assert str(info.value.problems[0]).startswith(f"{f}:3: train.max_itr: unknown key 'max_itr'")


def test_config_schema_is_the_root():
    assert "seed" in Config.model_fields
    assert MINI_SPEC.startswith("name: mini")


@pytest.mark.parametrize("value, message", [
    ("[" * 200 + "]" * 200, "nested more than 64 levels deep"),
    ("&a [1, *a]", "an alias that contains itself"),
    ("[1, 2", "YAML syntax error"),
])
def test_set_values_are_parsed_with_the_spec_limits(value, message):
    from harness.spec import parse_set

    with pytest.raises(SpecError) as exc:
        parse_set(f"train.steps={value}")
    text = str(exc.value)
    assert message in text and "\n" not in text and len(text) < 300


@pytest.mark.parametrize("item, message", [
    ("train..max_iter=3", "--set train..max_iter=3: empty part in the key 'train..max_iter'"),
    ("train.max_iter=true", "--set train.max_iter=true: expected a number, got true [cell A/synthetic/0]"),
    ("train.steps=[true]", "--set train.steps=[true]: expected numbers, got [true] [cell A/synthetic/0]"),
])
def test_a_boolean_from_set_is_named_as_the_override(mini_spec, item, message):
    with pytest.raises(SpecError) as exc:
        expand(load_spec(mini_spec()), [parse_set(item)])
    assert str(exc.value) == message
