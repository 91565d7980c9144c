"""Generated bad input for the real command line (issue 17): every case exits 2 with exactly one
line on stderr, no traceback, and leaves its folder (workspace, outputs) exactly as it was.

The cases come from seeded generators, one per class of bad input (YAML bombs, encodings and
control characters, non-finite and out-of-range numbers, lax types, seeds, include/exclude,
unknown keys, `--set` / `--set-file`, COCO and odgt annotation and detection files, ids, image
ids that leave the image folder, output paths, weights files, checkpoints, `${VAR}` paths,
tracking URIs). Valid controls run beside them and must succeed. `HARNESS_BAD_INPUT_SEED=N`
draws another set (the default seed keeps CI reproducible); `HARNESS_BAD_INPUT_N=K` draws K
cases per generator instead of the default.

All cases run in one `tests/cli_driver.py` process that forks a fresh child per command line
(hundreds of `python -m harness` starts would take minutes); `test_the_driver_matches_python_m_harness`
runs a few of them again as real `python -m harness` subprocesses and compares.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import random
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import MINI_SPEC, ROOT

SEED = int(os.environ.get("HARNESS_BAD_INPUT_SEED", "17"))
N = int(os.environ.get("HARNESS_BAD_INPUT_N", "6"))

Files = dict[str, bytes | Callable[[], bytes]]


@dataclass
class Case:
    name: str
    argv: list[str]
    files: Files
    ok: bool = False  # a valid control: must exit 0
    mention: str | None = None  # the error line names this (file, key or option)
    env: dict[str, str] = field(default_factory=dict)
    forbidden: tuple[str, ...] = ()  # never in the output (e.g. an environment value)
    check: Callable[[Path], None] | None = None  # a control's own check of what it wrote
    mkdirs: tuple[str, ...] = ()


# ---------------------------------------------------------------- specs

BASE = yaml.safe_load(MINI_SPEC)
PRODUCT = {"name": "prod", "base": BASE["base"],
           "axes": {"assigner": {"fcos": {"model.predictor.assigner": {"name": "fcos"}}, "poto": {}},
                    "lr": {"low": {"train.base_lr": 0.01}, "high": {"train.base_lr": 0.02}}},
           "seeds": [0]}
TRAIN_BASE = {
    "name": "tiny",
    "base": {
        "model": {"num_classes": 10, "backbone": {"name": "tiny", "tiny_width": 8, "norm": "gn",
                                                  "input_format": "torchvision_rgb", "freeze_at": 0},
                  "fpn": {"channels": 16}, "head": {"num_convs": 1, "gn_groups": 8},
                  "predictor": {"assigner": {"name": "poto"}}},
        "data": {"name": "synthetic", "num_workers": 0, "train_min_size": [64], "train_max_size": 64,
                 "test_min_size": 64, "test_max_size": 64,
                 "synthetic": {"num_train": 2, "num_val": 1, "min_size": 64, "max_size": 64}},
        "train": {"max_iter": 1, "base_lr": 0.01, "ims_per_batch": 2, "reference_batch": 2, "warmup_iters": 0,
                  "checkpoint_period": 1},
        "eval": {"nms": False},
        "tracking": {"log_period": 1},
    },
    "axes": {"assigner": {"poto": {}}},
    "rows": [{"label": "A", "assigner": "poto"}],
    "seeds": [0],
}
FLOAT_KEYS = [("train", "base_lr"), ("train", "momentum"), ("train", "weight_decay"), ("train", "gamma"),
              ("train", "warmup_factor"), ("train", "backbone_lr_mult")]
INT_KEYS = [("train", "max_iter"), ("train", "ims_per_batch"), ("train", "warmup_iters"),
            ("train", "checkpoint_period"), ("eval", "period")]
BOOL_KEYS = [("eval", "nms"), ("train", "amp")]


def dump(data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def set_in(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    return data


def spec_case(name: str, raw: bytes, mention: str = "spec.yaml") -> Case:
    return Case(name, ["plan", "spec.yaml"], {"spec.yaml": raw}, mention=mention)


def gen_yaml_bomb(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["laughs", "self", "self-map", "deep-list", "deep-map", "wide"])
    if kind == "laughs":
        width = rng.randint(6, 12)
        depth = 1
        while width ** depth <= 200_000:
            depth += 1
        names = [f"n{rng.randrange(10**6)}_{i}" for i in range(depth + 1)]
        lines = [f"  {names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
        for prev, cur in zip(names, names[1:], strict=False):
            lines.append(f"  {cur}: &{cur} [{', '.join([f'*{prev}'] * width)}]")
        return kind, ("name: x\nbase:\n" + "\n".join(lines) + "\n").encode()
    if kind == "self":
        return kind, b"name: x\nbase:\n  k: &a [1, *a]\n"
    if kind == "self-map":
        return kind, b"name: x\nbase:\n  k: &a {x: 1, y: *a}\n"
    if kind == "wide":  # one alias repeated: under the depth limit, over the node limit
        n = rng.randint(2000, 4000)
        return kind, (f"name: x\nbase:\n  a: &a [{', '.join(['1'] * 60)}]\n  b: [" + ", ".join(["*a"] * n) + "]\n").encode()
    depth = rng.choice([65, 100, 1000, rng.randint(66, 30_000)])
    if kind == "deep-list":
        return kind, b"name: x\nbase:\n  x: " + b"[" * depth + b"]" * depth + b"\n"
    return kind, b"name: x\nbase:\n  x: " + b"{a: " * depth + b"1" + b"}" * depth + b"\n"


def gen_encoding(rng: random.Random) -> tuple[str, bytes]:
    text = dump(BASE)
    kind = rng.choice(["latin1", "lone-continuation", "truncated-utf8", "utf16", "utf16-nobom", "nul", "utf32"])
    pos = rng.randrange(len(text))
    if kind == "latin1":
        return kind, text[:pos] + "é".encode("latin-1") + text[pos:]
    if kind == "lone-continuation":
        return kind, text[:pos] + bytes([rng.randint(0x80, 0xBF)]) + text[pos:]
    if kind == "truncated-utf8":
        return kind, text[:pos] + "€".encode()[:2] + b"\n" + text[pos:]
    if kind == "utf16":
        return kind, text.decode().encode("utf-16")
    if kind == "utf16-nobom":
        return kind, text.decode().encode(rng.choice(["utf-16-le", "utf-16-be"]))
    if kind == "utf32":
        return kind, text.decode().encode("utf-32")
    return kind, text[:pos] + b"\x00" + text[pos:]


def gen_control_char(rng: random.Random) -> tuple[str, bytes]:
    ch = rng.choice([c for c in range(1, 32) if c not in (9, 10, 13)] + [0x7F])
    data = set_in(BASE, ("description",), "a" + chr(0x41 + rng.randrange(26)) + "b")
    text = dump(data).decode()
    i = text.index("description: ") + len("description: ") + 1
    return f"U+{ch:04X}", (text[:i] + chr(ch) + text[i:]).encode()


def gen_non_finite(rng: random.Random) -> tuple[str, bytes]:
    key = rng.choice(FLOAT_KEYS)
    token = rng.choice([".inf", "-.inf", ".nan", ".NaN", ".Inf", "1e400", "-1.0e+999"])
    where = rng.choice(["base", "axis", "row"])
    text = dump(BASE).decode()
    marker = f"__{rng.randrange(10**6)}__"
    if where == "base":
        data = set_in(BASE, ("base", *key), marker)
    elif where == "axis":
        data = set_in(BASE, ("axes", "assigner", "poto", ".".join(key)), marker)
    else:
        data = copy.deepcopy(BASE)
        data["rows"][0]["overrides"] = {".".join(key): marker}
    text = dump(data).decode().replace(f"'{marker}'", token).replace(marker, token)
    return f"{where}.{'.'.join(key)}={token}", text.encode()


def gen_lax_type(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["int", "bool", "float", "str", "exclude"])
    if kind == "int":
        key, value = rng.choice(INT_KEYS), rng.choice([True, False, 1.5, [1], {"a": 1}, "ten", None, -rng.randint(1, 99)])
        if key == ("eval", "period") and isinstance(value, int) and value < 0:
            value = -value - 1 if value < -1 else -1
    elif kind == "bool":
        key, value = rng.choice(BOOL_KEYS), rng.choice([2, 0.5, [True], {"x": 1}, "maybe"])
    elif kind == "float":
        key, value = rng.choice(FLOAT_KEYS), rng.choice([True, False, [0.1], {"v": 1}, "fast"])
    elif kind == "str":
        key, value = ("model", "backbone", "name"), rng.choice([3, [1], {"a": 1}, True, "resnet7"])
    else:
        data = copy.deepcopy(PRODUCT)
        data[rng.choice(["exclude", "include"])] = rng.choice([[{}], [{}, {"assigner": "poto"}], [None], [3]])
        return "include/exclude", dump(data)
    return f"{'.'.join(key)}={value!r}", dump(set_in(BASE, ("base", *key), value))


def gen_seeds(rng: random.Random) -> tuple[str, bytes]:
    bad = rng.choice([-1, -rng.randint(2, 2**40), 2**32, 2**32 + rng.randint(0, 10**6), 2**70, 2**rng.randint(33, 300),
                      True, 1.5, "3", None, [0], {"a": 0}])
    seeds = [0, 1]
    seeds.insert(rng.randrange(3), bad)
    return f"seeds={bad!r}"[:60], dump(set_in(BASE, ("seeds",), seeds))


def gen_structure(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["unknown-key", "section-type", "unknown-axis-value", "duplicate-key", "syntax", "python-tag",
                       "not-a-mapping", "empty"])
    if kind == "unknown-key":
        junk = "k" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(1, 12)))
        path = rng.choice([(junk,), ("base", junk), ("base", "train", junk), ("base", "model", "backbone", junk),
                           ("base", "model", "predictor", "assigner", junk)])
        return f"{kind} {'.'.join(path)}", dump(set_in(BASE, path, rng.choice([1, "x", [1], {"a": 1}])))
    if kind == "section-type":
        section = rng.choice(["base", "axes", "rows", "seeds", "name", "tables"])
        # one problem per case: a mapping for `base` would lack every required section at once
        values = {"name": [[1], {"a": 1}], "base": [3, [1, 2], "text", None], "axes": [3, [1, 2], "text", None],
                  "rows": [3, "text", {"k": 1}, None], "seeds": [3, "text", {"k": 1}, None, []],
                  "tables": [3, [1, 2], "text"]}[section]
        return f"{kind} {section}", dump(set_in(BASE, (section,), rng.choice(values)))
    if kind == "unknown-axis-value":
        data = copy.deepcopy(BASE)
        data["rows"][rng.randrange(2)]["assigner"] = "v" + str(rng.randrange(10**6))
        return kind, dump(data)
    text = dump(BASE).decode()
    lines = text.splitlines(keepends=True)
    if kind == "duplicate-key":
        top = [i for i, line in enumerate(lines) if line and not line.startswith((" ", "-"))]
        i = rng.choice(top)
        return kind, "".join(lines[: i + 1] + [lines[i].split(":")[0] + ": 1\n"] + lines[i + 1:]).encode()
    if kind == "syntax":
        i = rng.randrange(1, len(lines))
        junk = rng.choice(["  x: [1, 2\n", "\tbad: tab\n", "a: b: c\n", "- item\n  key: 1\n", "  : :\n", "{\n",
                           "'unterminated\n", "&\n"])
        return f"{kind} {junk.strip()!r}", "".join(lines[:i] + [junk] + lines[i:]).encode()
    if kind == "python-tag":
        tag = rng.choice(["!!python/object/apply:os.system ['touch PWNED']", "!!python/name:os.system",
                          "!!python/object/new:subprocess.Popen [['touch', 'PWNED']]",
                          "!custom 3", "!!python/object:harness.spec.schema.Config {}"])
        return f"{kind} {tag.split()[0]}", (text + f"description: {tag}\n").encode()
    if kind == "not-a-mapping":
        return kind, rng.choice([b"- 1\n- 2\n", b"just text\n", b"42\n", b"[name, x]\n"])
    return kind, rng.choice([b"", b"\n\n", b"# only a comment\n", b"---\n"])


#: BASE with a third row and a table whose claims name every row: a fault in the rows or axes
#: must be reported alone, not buried under the claims that now point at a missing row.
CLAIMED = copy.deepcopy(BASE)
CLAIMED["rows"] = [{"label": "A", "table": "t", "baseline": True, "assigner": "fcos"},
                   {"label": "B", "table": "t", "assigner": "poto"},
                   {"label": "C", "table": "t", "assigner": "poto", "overrides": {"train.base_lr": 0.02}}]
CLAIMED["tables"] = {"t": {"title": "T", "layout": "defcn_ablation", "claims": [
    {"row": "B", "vs": "A", "metric": "ap"}, {"row": "C", "vs": "B", "metric": "ap"},
    {"row": "A", "post": "nms_free", "vs": "A", "vs_post": "nms", "metric": "ap", "expect": "worse"},
    {"row": "C", "vs": "A", "metric": "ap", "margin": 1.0}]}}


def gen_rows_axes(rng: random.Random) -> Case:
    """Structural faults in a spec that declares claims: (what, spec, the words its one line must have)."""
    data = copy.deepcopy(CLAIMED)
    kind = rng.choice(["duplicate-label", "include-unknown-value", "include-unknown-axis", "exclude-unknown-axis",
                       "exclude-unknown-value", "rows-empty", "include-with-rows", "row-unknown-value",
                       "empty-axis"])
    junk = "v" + str(rng.randrange(10**6))
    if kind == "duplicate-label":
        i = rng.randrange(1, 3)
        data["rows"][i]["label"] = data["rows"][rng.randrange(i)]["label"]
        mention = "duplicate row label"
    elif kind in ("include-unknown-value", "include-unknown-axis", "exclude-unknown-axis", "exclude-unknown-value"):
        del data["rows"]
        section = kind.split("-")[0]
        combo = {"assigner": junk} if kind.endswith("value") else {junk: "poto"}
        data[section] = [combo]
        mention = f"unknown value '{junk}'" if kind.endswith("value") else f"unknown axis '{junk}'"
    elif kind == "rows-empty":
        data["rows"] = []
        mention = "rows: an empty list"
    elif kind == "include-with-rows":
        data[rng.choice(["include", "exclude"])] = [{"assigner": rng.choice(["poto", junk])}]
        mention = "with rows, list the rows you want"
    elif kind == "row-unknown-value":
        data["rows"][rng.randrange(3)]["assigner"] = junk
        mention = f"unknown value '{junk}'"
    else:
        data["axes"]["assigner"] = {}
        mention = "an axis needs at least one value"
    return Case(f"spec rows/axes: {kind}", ["plan", "spec.yaml"], {"spec.yaml": dump(data)}, mention=mention)


def gen_big(rng: random.Random) -> tuple[str, bytes]:
    pad = rng.randint((1 << 20) + 1, (1 << 20) + 50_000)
    return "over 1 MiB", dump(BASE) + b"# " + b"x" * pad + b"\n"


# ---------------------------------------------------------------- overrides

def gen_set(rng: random.Random) -> Case:
    kind = rng.choice(["unknown", "non-finite", "seed", "no-equals", "type", "deep", "empty-key", "bomb"])
    if kind == "unknown":
        item = rng.choice(["train.", "model.", "", "eval.", "model.backbone."]) + "zz" + str(rng.randrange(1000)) + "=1"
    elif kind == "non-finite":
        item = ".".join(rng.choice(FLOAT_KEYS)) + "=" + rng.choice(["inf", ".inf", "-.inf", "nan", ".nan", "1e400"])
    elif kind == "seed":
        item = f"seed={rng.randint(0, 5)}"
    elif kind == "no-equals":
        item = "train.max_iter" + rng.choice(["", ":3", " 3"])
    elif kind == "type":
        item = rng.choice([".".join(rng.choice(INT_KEYS)) + "=" + rng.choice(["true", "1.5", "[1]", "{a: 1}", "abc"]),
                           ".".join(rng.choice(BOOL_KEYS)) + "=" + rng.choice(["2", "[true]", "0.5"]),
                           "train.steps=" + rng.choice(["[1, x]", "{a: 1}", "[true]", "[1.5]"])])
    elif kind == "deep":
        d = rng.randint(65, 3000)
        item = "train.steps=" + "[" * d + "]" * d
    elif kind == "empty-key":
        item = rng.choice(["=3", " =3", "..=3", "train..max_iter=3"])
    else:
        item = "train.steps=" + rng.choice(["&a [*a]", "[*a]", "!!python/name:os.system"])
    spec = dump(BASE)
    return Case(f"--set {kind}: {item[:40]!r}", ["plan", "spec.yaml", "--set", item], {"spec.yaml": spec},
                mention="--set")


def gen_set_file(rng: random.Random) -> Case:
    kind = rng.choice(["seed", "non-finite", "encoding", "bomb", "unknown", "not-a-mapping", "missing", "directory",
                       "nested-seed"])
    spec = dump(BASE)
    files: Files = {"spec.yaml": spec}
    mkdirs: tuple[str, ...] = ()
    if kind == "seed":
        files["o.yaml"] = dump({"train": {"max_iter": 3}, "seed": rng.randint(0, 9)})
    elif kind == "nested-seed":
        files["o.yaml"] = b"train.max_iter: 3\nseed: 1\n"
    elif kind == "non-finite":
        files["o.yaml"] = (".".join(rng.choice(FLOAT_KEYS)) + ": " + rng.choice([".inf", ".nan", "-.inf"]) + "\n").encode()
    elif kind == "encoding":
        files["o.yaml"] = gen_encoding(rng)[1].replace(b"name:", b"train.max_iter: 3\nxname:", 0)
    elif kind == "bomb":
        files["o.yaml"] = gen_yaml_bomb(rng)[1]
    elif kind == "unknown":
        files["o.yaml"] = dump({"train": {"zz" + str(rng.randrange(99)): 1}})
    elif kind == "not-a-mapping":
        files["o.yaml"] = rng.choice([b"- 1\n", b"3\n", b"text\n"])
    elif kind == "directory":
        mkdirs = ("o.yaml",)
    return Case(f"--set-file {kind}", ["plan", "spec.yaml", "--set-file", "o.yaml"], files, mention="o.yaml",
                mkdirs=mkdirs)


# ---------------------------------------------------------------- COCO files

def coco_gt() -> dict:
    return {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "1.jpg"},
                       {"id": 2, "width": 64, "height": 64, "file_name": "2.jpg"}],
            "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 40, 20, 20], "area": 400, "iscrowd": 0},
                            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 40, 40], "area": 1600, "iscrowd": 1}]}


def coco_dets() -> list:
    return [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [52, 40, 20, 18], "score": 0.7},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2}]


HUGE_INT = "9" * 5000


def bad_number(rng: random.Random) -> str:
    """A JSON token json.loads accepts that is not a sane number (or no number at all)."""
    return rng.choice(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", HUGE_INT, "1e13", "-2e12",
                       "true", "null", '"12"', "[1]", "{}"])


def mutate_json(rng: random.Random, data, which: str) -> tuple[str, bytes]:
    """A broken copy of a COCO instances dict or results list, as file bytes."""
    kind = rng.choice(["number", "id", "missing", "box", "truncate", "encoding", "top", "empty", "unknown-ref"])
    text = json.dumps(data)
    if kind == "truncate":
        cut = rng.randrange(1, len(text) - 1)
        return f"{kind} at {cut}", text[:cut].encode()
    if kind == "encoding":
        pos = rng.randrange(len(text))
        return kind, text[:pos].encode() + rng.choice([b"\xff", b"\xc3(", b"\x00", "é".encode("latin-1")]) + text[pos:].encode()
    if kind == "top":
        return kind, rng.choice([b"3", b'"x"', b"null", b"{}" if which == "dets" else b"[]", b"[[]]", b"[3]"])
    if kind == "empty":
        return kind, rng.choice([b"", b"  \n", b"[]" if which == "dets" else b""])
    marker = f'"__M{rng.randrange(10**6)}__"'
    data = copy.deepcopy(data)
    recs = data if which == "dets" else data["annotations"]
    rec = rng.choice(recs)
    if kind == "number":
        key = rng.choice(["score", "bbox"] if which == "dets" else ["area", "bbox", "width"])
        if key == "width":
            rec = rng.choice(data["images"])
            key = rng.choice(["width", "height"])
        if key == "bbox":
            rec["bbox"][rng.randrange(4)] = json.loads(marker)
        else:
            rec[key] = json.loads(marker)
        token = bad_number(rng)
        return f"{kind} {key}={token[:12]}", json.dumps(data).replace(marker, token).encode()
    if kind == "id":
        key = rng.choice(["image_id", "category_id"] + (["id"] if which == "gt" else []))
        rec[key] = rng.choice([[1], True, False, 1.5, {"id": 1}, None])
        return f"{kind} {key}={rec[key]!r}", json.dumps(data).encode()
    if kind == "missing":
        key = rng.choice(["image_id", "category_id", "bbox"] + (["score"] if which == "dets" else ["id", "area", "iscrowd"]))
        del rec[key]
        return f"{kind} {key}", json.dumps(data).encode()
    if kind == "box":
        rec["bbox"] = rng.choice([[1, 2, 3], [1, 2, -3, 4], [1, 2, 3, -0.5], ["1", 2, 3, 4], "1,2,3,4", None, [1, 2, 3, 4, 5]])
        return f"{kind} {rec['bbox']!r}", json.dumps(data).encode()
    rec[rng.choice(["image_id", "category_id"])] = rng.choice([99, 7, "x"])
    return kind, json.dumps(data).encode()


def gen_coco(rng: random.Random) -> Case:
    which = rng.choice(["gt", "dets"])
    what, raw = mutate_json(rng, coco_gt() if which == "gt" else coco_dets(), which)
    files: Files = {"gt.json": json.dumps(coco_gt()).encode(), "dt.json": json.dumps(coco_dets()).encode()}
    files["gt.json" if which == "gt" else "dt.json"] = raw
    return Case(f"coco {which} {what}", ["evaluate", "coco", "--gt", "gt.json", "--dets", "dt.json", "--json"], files,
                mention="gt.json" if which == "gt" else "dt.json")


# ---------------------------------------------------------------- odgt files

def odgt_gt() -> list:
    return [{"ID": "273271,c9db000d5146c15", "width": 100, "height": 80,
             "gtboxes": [{"tag": "person", "fbox": [0, 0, 10, 20], "extra": {"ignore": 0}},
                         {"tag": "mask", "fbox": [50, 50, 20, 20], "extra": {"ignore": 1}}]},
            {"ID": "b", "width": 60, "height": 60, "gtboxes": [{"tag": "person", "fbox": [5, 5, 30, 30]}]}]


def odgt_dets() -> list:
    return [{"ID": "273271,c9db000d5146c15", "dtboxes": [{"box": [0, 0, 10, 20], "score": 0.9, "tag": 1}]},
            {"ID": "b", "dtboxes": [{"box": [5, 5, 30, 30], "score": 0.7, "tag": 1},
                                    {"box": [40, 40, 5, 5], "score": 0.6, "tag": 1}]}]


def lines(records: list) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def mutate_odgt(rng: random.Random, records: list, which: str) -> tuple[str, bytes]:
    kind = rng.choice(["id", "number", "box", "line", "encoding", "empty", "structure", "traversal"])
    boxes, box = ("gtboxes", "fbox") if which == "gt" else ("dtboxes", "box")
    records = copy.deepcopy(records)
    rec = rng.choice(records)
    if kind == "id":
        value = rng.choice([3, [1], None, "", True, records[1 - records.index(rec)]["ID"]])
        if value is None and rng.random() < 0.5:
            del rec["ID"]
        else:
            rec["ID"] = value
        return f"{kind} {value!r}", lines(records)
    if kind == "traversal":
        rec["ID"] = rng.choice(["../other/img", "../../etc/passwd", "/etc/hostname", "a/../../b", "..\\x", "~/img",
                                "sub/../../" + str(rng.randrange(99))])
        return f"{kind} {rec['ID']!r}", lines(records)
    if kind == "number":
        marker = f'"__M{rng.randrange(10**6)}__"'
        target = rng.choice([box, "score", "width"] if which == "dets" else [box, "width", "height"])
        if target in ("width", "height"):
            rec[target] = json.loads(marker)
        else:
            b = rng.choice(rec[boxes])
            if target == "score":
                b["score"] = json.loads(marker)
            else:
                b[box][rng.randrange(4)] = json.loads(marker)
        token = bad_number(rng) if target != box else rng.choice([bad_number(rng), "1e308"])
        if target in ("width", "height"):
            token = rng.choice([token, "0", "-5"])
        return f"{kind} {target}={token[:12]}", lines(records).replace(marker.encode(), token.encode())
    if kind == "box":
        b = rng.choice(rec[boxes])
        b[box] = rng.choice([[1, 2, 3], [1, 2, -3, 4], ["1", 2, 3, 4], None, "0 0 1 1", [1, 2, 3, 4, 5]])
        if b[box] is None:
            del b[box]
        return f"{kind} {b.get(box)!r}", lines(records)
    if kind == "structure":
        sub = rng.choice(["boxes-not-list", "box-not-object", "tag", "extra", "missing-boxes"])
        if sub == "boxes-not-list":
            rec[boxes] = rng.choice([{}, "x", 3])
        elif sub == "missing-boxes":
            del rec[boxes]
        elif sub == "box-not-object":
            rec[boxes][0] = rng.choice([3, "x", [1, 2, 3, 4]])
        elif sub == "tag" and which == "gt":
            rec[boxes][0]["tag"] = rng.choice([1, None, ["person"]])
        elif which == "gt":
            rec[boxes][0]["extra"] = rng.choice([3, "x", [1]])
        else:
            rec[boxes][0]["score"] = rng.choice([None, "0.5", True])
        return f"{kind} {sub}", lines(records)
    text = lines(records)
    if kind == "line":
        sub = rng.choice(["truncated", "not-object", "garbage"])
        body = text.decode().splitlines()
        i = rng.randrange(len(body))
        if sub == "truncated":
            body[i] = body[i][: rng.randrange(1, len(body[i]) - 1)]
        elif sub == "not-object":
            body[i] = rng.choice(["[1, 2]", "3", '"text"', "null"])
        else:
            body[i] = rng.choice(["{bad}", "{'ID': 'a'}", "ID: a", "{" * 30])
        return f"{kind} {sub}", ("\n".join(body) + "\n").encode()
    if kind == "encoding":
        pos = rng.randrange(len(text))
        return kind, text[:pos] + rng.choice([b"\xff", b"\xc3(", b"\x80"]) + text[pos:]
    return kind, rng.choice([b"", b"\n\n", b"   \n"])


def gen_odgt(rng: random.Random) -> Case:
    which = rng.choice(["gt", "dets"])
    what, raw = mutate_odgt(rng, odgt_gt() if which == "gt" else odgt_dets(), which)
    files: Files = {"gt.odgt": lines(odgt_gt()), "dt.odgt": lines(odgt_dets())}
    files["gt.odgt" if which == "gt" else "dt.odgt"] = raw
    return Case(f"crowdhuman {which} {what}", ["evaluate", "crowdhuman", "--gt", "gt.odgt", "--dets", "dt.odgt"],
                files, mention="gt.odgt" if which == "gt" else "dt.odgt")


def png(w: int = 40, h: int = 30) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def gen_convert(rng: random.Random) -> Case:
    files: Files = {"img/273271,c9db000d5146c15.png": png(), "img/b.png": png(), "other/img.png": png(),
                    "etc/passwd.png": png()}
    kind = rng.choice(["odgt", "odgt", "traversal", "out-dir", "out-under-file", "missing-image"])
    out = "out/coco.json"
    mkdirs: tuple[str, ...] = ()
    recs = odgt_gt()
    for r in recs:  # sizes from the image files
        r.pop("width")
        r.pop("height")
    if kind == "odgt":
        what, raw = mutate_odgt(rng, recs, "gt")
    elif kind == "traversal":
        recs[rng.randrange(2)]["ID"] = rng.choice(["../other/img", "../etc/passwd", "x/../../other/img"])
        what, raw = "ID leaves the image folder", lines(recs)
    elif kind == "out-dir":
        what, raw, out, mkdirs = "--out is a directory", lines(recs), "outdir", ("outdir",)
    elif kind == "out-under-file":
        files["afile"] = b"x"
        what, raw, out = "--out under a file", lines(recs), "afile/coco.json"
    else:
        recs[1]["ID"] = "nope" + str(rng.randrange(99))
        what, raw = "missing image", lines(recs)
    files["a.odgt"] = raw
    mention = "--out" if kind.startswith("out") else "a.odgt"
    return Case(f"convert-crowdhuman {what}", ["data", "convert-crowdhuman", "a.odgt", "img", "--out", out], files,
                mention=mention, mkdirs=mkdirs)


# ---------------------------------------------------------------- weights, checkpoints, environment, tracking

def _long(n: int) -> bytes:
    size = (n.bit_length() + 8) // 8
    return b"\x8a" + bytes([size]) + n.to_bytes(size, "little")


def _blobs(array: bytes) -> bytes:
    """A protocol-2 pickle of {"blobs": {"conv1_w": <array opcodes>}}."""
    return (b"\x80\x02}X\x05\x00\x00\x00blobs}X\x07\x00\x00\x00conv1_w" + array + b"ss.")


def _pickle_ndarray_call(shape: tuple, code: str) -> bytes:
    """numpy's _reconstruct(ndarray, shape, code): numpy allocates `shape` before any data."""
    return _blobs(b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(" + b"".join(map(_long, shape))
                  + b"tC" + bytes([len(code)]) + code.encode() + b"tR")


def _setstate_bomb(rng: random.Random) -> bytes:
    """A numpy-style pickle whose state (the BUILD opcode) claims a shape far larger than the file."""
    n = rng.choice([2**40, 2**33, 10**12])
    dtype = rng.choice([b"f4", b"O8"])
    return _blobs(b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(K\x00tC\x01btR"
                  b"(K\x01(" + _long(n) + b"tcnumpy\ndtype\n(X\x02\x00\x00\x00" + dtype + b"\x89\x88tR"
                  b"\x89C\x10" + b"\x00" * 16 + b"tb")


def gen_weights(rng: random.Random) -> Case:
    import numpy as np

    kind = rng.choice(["huge-array", "huge-setstate", "object-array", "truncated", "random-bytes", "empty",
                       "evil-global", "not-a-dict", "pth-garbage", "missing", "directory"])
    name = "w.pkl"
    files: Files = {}
    mkdirs: tuple[str, ...] = ()
    if kind == "huge-array":
        shape = tuple(rng.randint(2**10, 2**14) for _ in range(rng.randint(3, 4)))
        files[name] = _pickle_ndarray_call(shape, rng.choice(["b", "f", "d", "D"]))
    elif kind == "huge-setstate":
        files[name] = _setstate_bomb(rng)
    elif kind == "object-array":
        files[name] = pickle.dumps({"blobs": {"conv1_w": np.array([1, "x", None], dtype=object)}}, protocol=4)
    elif kind == "truncated":
        full = pickle.dumps({"blobs": {"conv1_w": np.ones((64, 3, 7, 7), np.float32)}}, protocol=4)
        files[name] = full[: rng.randrange(1, len(full) - 1)]
    elif kind == "random-bytes":
        files[name] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    elif kind == "empty":
        files[name] = b""
    elif kind == "evil-global":
        target = rng.choice([("os", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("posix", "system")])
        files[name] = (b"\x80\x02c" + f"{target[0]}\n{target[1]}\n".encode() + b"X\x0b\x00\x00\x00touch PWNED\x85R.")
    elif kind == "not-a-dict":
        files[name] = pickle.dumps(rng.choice([[1, 2], 3, "x", {"blobs": [1]}]), protocol=2)
    elif kind == "pth-garbage":
        name = "w.pth"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02garbage")
        files[name] = rng.choice([buf.getvalue(), buf.getvalue()[: rng.randint(5, 60)], b"PK\x03\x04junk"])
    elif kind == "directory":
        mkdirs = (name,)
    spec = set_in(TRAIN_BASE, ("base", "model", "backbone"), {"name": "resnet18", "weights": name})
    files["spec.yaml"] = dump(spec)
    return Case(f"weights {kind}", ["train", "spec.yaml", "--row", "A", "--workspace", "ws"], files,
                mention=name, mkdirs=mkdirs)


def _train_spec_path_key() -> str:
    from harness.spec import expand, load_spec

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"harness-bad-input-key-{os.getpid()}.yaml"
    tmp.write_bytes(dump(TRAIN_BASE))
    try:
        return expand(load_spec(tmp))[0].run_key
    finally:
        tmp.unlink()


def _checkpoint_bytes(width: int = 8, drop: str | None = None) -> bytes:
    """A real checkpoint of the tiny cell (or of a model of another width)."""
    import tempfile

    import torch

    from harness.spec import expand, load_spec
    from harness.train import checkpoint as ckpt
    from harness.train.session import Resume, prepare

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "s.yaml"
        spec.write_bytes(dump(set_in(TRAIN_BASE, ("base", "model", "backbone", "tiny_width"), width)))
        cell = expand(load_spec(spec))[0]
        state = torch.get_rng_state()
        p = prepare(cell, workspace=Path(tmp) / "ws", resume=Resume.FRESH, spec_file=str(spec))
        torch.set_rng_state(state)
        path = Path(tmp) / "checkpoint.pt"
        ckpt.save(path, model=p.model, optimizer=p.optimizer, scheduler=p.scheduler, scaler=None, iteration=1,
                  run_id=None, run_key=cell.run_key, health=p.health.state_dict())
        if drop:
            s = torch.load(path, weights_only=True)
            del s[drop]
            torch.save(s, path)
        return path.read_bytes()


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def gen_checkpoint(rng: random.Random, key: str) -> Case:
    kind = rng.choice(["truncated", "random-bytes", "empty", "evil-pickle", "other-model", "missing-key", "plain-pickle"])
    if kind == "truncated":
        cut = rng.random()
        data: bytes | Callable[[], bytes] = lambda: (lambda b: b[: max(1, int(len(b) * cut))])(_checkpoint_bytes())  # noqa: E731
    elif kind == "random-bytes":
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000)))
    elif kind == "empty":
        data = b""
    elif kind == "evil-pickle":
        data = pickle.dumps({"model": Evil(), "iteration": 1}, protocol=rng.choice([2, 4]))
    elif kind == "other-model":
        data = lambda: _checkpoint_bytes(width=16)  # noqa: E731
    elif kind == "missing-key":
        drop = rng.choice(["model", "optimizer", "rng", "iteration", "scheduler"])
        data = lambda: _checkpoint_bytes(drop=drop)  # noqa: E731
    else:
        data = pickle.dumps({"model": {}, "iteration": 1})
    files: Files = {"spec.yaml": dump(TRAIN_BASE), f"ws/{key}/checkpoint.pt": data}
    return Case(f"checkpoint {kind}", ["train", "spec.yaml", "--row", "A", "--workspace", "ws"], files,
                mention="checkpoint.pt")


def gen_environment(rng: random.Random) -> Case:
    secret = "/s3cr3t-" + str(rng.randrange(10**9)) + ":/opt/bin"
    kind = rng.choice(["weights", "data-root", "unset"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin") + ":" + secret, "HARNESS_TOKEN_X": "tok" + secret}
    if kind == "weights":
        weights = rng.choice(["${HOME}/x-${PATH}.pkl", "${PATH}/r50.pkl", "w/${HARNESS_TOKEN_X}.pkl"])
        spec = set_in(TRAIN_BASE, ("base", "model", "backbone"), {"name": "resnet18", "weights": weights})
        mention = "model.backbone.weights"
    elif kind == "data-root":
        data = {"name": "coco", "root": rng.choice(["${PATH}/coco", "d/${HARNESS_TOKEN_X}"]),
                "train": {"images": "train", "annotations": "train.json"},
                "val": {"images": "val", "annotations": "val.json"}}
        spec = set_in(TRAIN_BASE, ("base", "data"), data)
        mention = "data.root: no such directory"  # the preflight names the missing root, once
    else:
        spec = set_in(TRAIN_BASE, ("base", "model", "backbone"),
                      {"name": "resnet18", "weights": "${HARNESS_UNSET_" + str(rng.randrange(10**6)) + "}/w.pkl"})
        mention = "is not set"
    return Case(f"environment {kind}", ["train", "spec.yaml", "--row", "A", "--workspace", "ws"],
                {"spec.yaml": dump(spec)}, mention=mention, env=env, forbidden=(secret, "s3cr3t"))


def gen_tracking(rng: random.Random) -> Case:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kind = rng.choice(["file", "plain-path", "sqlite-dir", "sqlite-not-db", "http-closed", "pg-driver", "missing-store"])
    files: Files = {"spec.yaml": dump(TRAIN_BASE), "notdb": b"hello, not a database\n" * 3}
    mkdirs: tuple[str, ...] = ("adir",)
    uri = {"file": "file:./mlruns", "plain-path": "./mlruns", "sqlite-dir": "sqlite:///adir",
           "sqlite-not-db": "sqlite:///notdb", "http-closed": f"http://127.0.0.1:{port}",
           "pg-driver": "postgresql+nodriver" + str(rng.randrange(99)) + "://u@h/db",
           "missing-store": "sqlite:///nowhere/mlflow.db"}[kind]
    # status in a fresh workspace is valid (every cell pending, nothing written); report needs a store
    command = "report" if kind == "missing-store" else rng.choice(["train", "status", "report"])
    argv = [command, "spec.yaml", "--workspace", "ws", "--tracking-uri", uri]
    if command == "train":
        argv[2:2] = ["--row", "A"]
    return Case(f"tracking {command} {kind}", argv, files, mention=None, mkdirs=mkdirs)


# ---------------------------------------------------------------- valid controls

def _strict_json(path: Path):
    def no_constants(token):
        raise AssertionError(f"{path}: non-JSON number {token}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def controls() -> list[Case]:
    with_aliases = MINI_SPEC.replace("  train: {max_iter: 10, base_lr: 0.01}", "  train: &t {max_iter: 10, base_lr: 0.01}")
    with_aliases = with_aliases.replace("    poto: {}", "    poto: {train: *t}").encode()
    unicode_spec = dump(set_in(BASE, ("description",), "caf\u00e9 \u2028 line separator, \u6f22\u5b57"))
    odgt_recs = odgt_gt()
    odgt_recs[1]["ID"] = "b\u2028c"
    dets = odgt_dets()
    dets[1]["ID"] = "b\u2028c"
    conv = odgt_gt()
    for r in conv:
        r.pop("width")
        r.pop("height")
    conv[0]["gtboxes"][0]["fbox"] = [0, 0, 1e11, 5]  # large, finite, and its area too

    def converted(d: Path) -> None:
        out = _strict_json(d / "out" / "coco.json")
        assert [a["bbox"] for a in out["annotations"]][:1] == [[0, 0, 1e11, 5]]
        assert not list(d.rglob("*.tmp"))

    def trained(d: Path) -> None:
        assert list((d / "ws").glob("*/checkpoint.pt")) and (d / "ws" / "mlflow.db").is_file()

    return [
        Case("control plan", ["plan", "spec.yaml"], {"spec.yaml": dump(BASE)}, ok=True),
        Case("control plan with aliases", ["plan", "spec.yaml"], {"spec.yaml": with_aliases}, ok=True),
        Case("control plan unicode", ["plan", "spec.yaml", "--json"], {"spec.yaml": unicode_spec}, ok=True),
        Case("control plan product", ["plan", "spec.yaml"], {"spec.yaml": dump(PRODUCT)}, ok=True),
        Case("control plan claims", ["plan", "spec.yaml"], {"spec.yaml": dump(CLAIMED)}, ok=True),
        Case("control --set", ["plan", "spec.yaml", "--set", "train.base_lr=0.02", "train.max_iter=20", "--set",
                               "eval.nms=true"], {"spec.yaml": dump(BASE)}, ok=True),
        Case("control --set-file", ["plan", "spec.yaml", "--set-file", "o.yaml"],
             {"spec.yaml": dump(BASE), "o.yaml": b"train: {base_lr: 1.0e-3}\neval.period: 5\n"}, ok=True),
        Case("control evaluate coco", ["evaluate", "coco", "--gt", "gt.json", "--dets", "dt.json", "--json"],
             {"gt.json": json.dumps(coco_gt()).encode(), "dt.json": json.dumps(coco_dets()).encode()}, ok=True),
        Case("control evaluate crowdhuman", ["evaluate", "crowdhuman", "--gt", "gt.odgt", "--dets", "dt.odgt"],
             {"gt.odgt": lines(odgt_recs), "dt.odgt": lines(dets)}, ok=True),
        Case("control convert-crowdhuman", ["data", "convert-crowdhuman", "a.odgt", "img", "--out", "out/coco.json"],
             {"a.odgt": lines(conv), "img/273271,c9db000d5146c15.png": png(), "img/b.png": png()}, ok=True,
             check=converted),
        Case("control train resumes a valid checkpoint", ["train", "spec.yaml", "--row", "A", "--workspace", "ws"],
             {"spec.yaml": dump(TRAIN_BASE), f"ws/{RUN_KEY}/checkpoint.pt": _checkpoint_bytes}, ok=True, check=trained),
    ]


# ---------------------------------------------------------------- the cases

RUN_KEY = _train_spec_path_key()
SPEC_GENERATORS = {"yaml bomb": gen_yaml_bomb, "encoding": gen_encoding, "control character": gen_control_char,
                   "non-finite": gen_non_finite, "lax type": gen_lax_type, "seeds": gen_seeds,
                   "structure": gen_structure}


def generate(seed: int, n: int) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    for family, gen in SPEC_GENERATORS.items():
        for _ in range(n):
            what, raw = gen(rng)
            cases.append(spec_case(f"spec {family}: {what}", raw))
    cases.append(spec_case("spec size: over 1 MiB", gen_big(rng)[1]))
    for gen in (gen_set, gen_set_file, gen_coco, gen_coco, gen_odgt, gen_odgt, gen_convert, gen_weights,
                gen_environment, gen_tracking):
        cases += [gen(rng) for _ in range(n)]
    cases += [gen_checkpoint(rng, RUN_KEY) for _ in range(n)]
    cases += [gen_rows_axes(rng) for _ in range(2 * n)]
    for i, c in enumerate(cases):
        c.name = f"{i:03d} {c.name}"
    return cases + controls()


CASES = generate(SEED, N)


def snapshot(folder: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


def materialise(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True)
    for rel, data in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data() if callable(data) else data)
    for rel in case.mkdirs:
        (folder / rel).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once, by one driver process; name -> (result, folder, before, after)."""
    root = tmp_path_factory.mktemp("bad-input")
    folders, before = [], []
    for i, case in enumerate(CASES):
        folder = root / f"case{i:03d}"
        materialise(case, folder)
        folders.append(folder)
        before.append(snapshot(folder))
    time.sleep(0.01)  # a rewrite within the same mtime tick would still change the size or be caught by content
    spec = [{"argv": c.argv, "cwd": str(f), "env": c.env} for c, f in zip(CASES, folders, strict=True)]
    (root / "cases.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cli_driver.py"), str(root / "cases.json"),
                           str(root / "results.json"), str(min(2, os.cpu_count() or 1))], env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((root / "results.json").read_text())
    print(f"\n{len(CASES)} generated command lines (seed {SEED}) in {elapsed:.1f} s; slowest: "
          + ", ".join(f"{CASES[i].name} {out[i]['seconds']:.1f} s"
                      for i in sorted(range(len(out)), key=lambda i: -out[i]["seconds"])[:3]))
    return {c.name: (r, f, b, snapshot(f)) for c, r, f, b in zip(CASES, out, folders, before, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_generated_case(case: Case, results):
    result, folder, before, after = results[case.name]
    err, code = result["stderr"], result["code"]
    shown = f"exit {code}, stderr:\n{err[-2000:]}\nstdout:\n{result['stdout'][-500:]}"
    assert "Traceback" not in err, shown
    assert not (folder / "PWNED").exists() and not Path("PWNED").exists()
    for text in case.forbidden:
        assert text not in err and text not in result["stdout"], shown
    if case.ok:
        assert code == 0, shown
        if case.check:
            case.check(folder)
        return
    assert code == 2, shown
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and err.endswith("\n"), shown
    if case.mention:
        assert case.mention in err, shown
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in set(after) & set(before) if after[k] != before[k] and not after[k][0])
    assert not created and not changed, f"created {created}, changed {changed}; {shown}"


FAITHFUL = ["spec yaml bomb", "weights", "checkpoint", "convert-crowdhuman", "coco"]


def test_the_driver_matches_python_m_harness(results, tmp_path):
    """A few cases again as real `python -m harness` processes: same exit code, same stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    picked = [next(c for c in CASES if prefix in c.name and not c.ok) for prefix in FAITHFUL]
    for i, case in enumerate(picked):
        folder = tmp_path / f"c{i}"
        materialise(case, folder)
        proc = subprocess.run([sys.executable, "-m", "harness", *case.argv], cwd=folder, env={**env, **case.env},
                              capture_output=True, text=True, timeout=120)
        driven = results[case.name][0]
        assert (proc.returncode, proc.stderr) == (driven["code"], driven["stderr"]), case.name
