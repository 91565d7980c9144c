"""The command line itself: --version, `--set` on either side of SPEC, hidden worker flags, an
example in every subcommand's help."""

import argparse
import json
import re

import pytest

from harness.cli import EXAMPLES, build_parser, main
from harness.schedule.job import split_set_items
from tests.conftest import EXPERIMENTS

QUICK = str(EXPERIMENTS / "quickstart.yaml")


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 0
    assert re.fullmatch(rf"harness {re.escape(version('harness'))}( \(git [0-9a-f]{{7,40}}\))?", out), out


@pytest.mark.parametrize("argv", [
    ["plan", QUICK, "--set", "train.max_iter=3000", "--json"],
    ["plan", "--set", "train.max_iter=3000", QUICK, "--json"],
    ["plan", "--set", "train.max_iter=3000", "eval.period=100", QUICK, "--json"],
    ["plan", "--set=train.max_iter=3000", "eval.period=100", QUICK, "--json"],
    ["plan", "--json", "--set", "train.max_iter=3000", "--set", "eval.period=100", QUICK],
])
def test_set_on_either_side_of_spec(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    cells = json.loads(capsys.readouterr().out)
    assert len(cells) == 15 and all(c["config"]["train"]["max_iter"] == 3000 for c in cells)
    if "eval.period=100" in argv:
        assert all(c["config"]["eval"]["period"] == 100 for c in cells)


def test_split_set_items():
    assert split_set_items(["plan", "--set", "a=1", "b=2", "S", "--set", "c=3"]) == \
        ["plan", "--set", "a=1", "--set", "b=2", "S", "--set", "c=3"]
    assert split_set_items(["--set", "a=1", "--json", "b=2"]) == ["--set", "a=1", "--json", "b=2"]
    assert split_set_items(["--set", "bad", "S"]) == ["--set", "bad", "S"]  # the item is parse_set's to refuse
    assert split_set_items(["--set", "a=1", "--", "b=2"]) == ["--set", "a=1", "--", "b=2"]
    args = build_parser().parse_args(["run", "--set", "a=1", "b=2", "spec.yaml", "--set", "c=3"])
    assert args.spec == "spec.yaml" and args.overrides == ["a=1", "b=2", "c=3"]


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_subcommand_has_an_example_and_hides_worker_flags():
    parser = build_parser()
    assert "example:" in parser.format_help()
    subs = dict(_subparsers(parser))
    assert set(subs) == set(EXAMPLES)
    for name, sub in subs.items():
        text = sub.format_help()
        assert f"example:\n  {EXAMPLES[name]}" in text, name
    train = subs["train"].format_help()
    for flag in ("--job", "--parent-run", "--trial", "--sweep"):
        assert flag not in train
    # still accepted (the schedulers write them)
    args = build_parser().parse_args(["train", "--job", "j.json", "--parent-run", "r", "--trial", "3"])
    assert args.job == "j.json" and args.parent_run == "r" and args.trial == 3
