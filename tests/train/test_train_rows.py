"""`harness train` on every row of the four experiment files: FINISHED with tags, params,
loss metrics and eval metrics (tiny backbone, synthetic data, two iterations)."""

import pytest

from harness.spec import expand, load_spec
from tests.conftest import EXPERIMENTS
from tests.train.helpers import runs, tiny_overrides

pytestmark = pytest.mark.slow

ROWS = [(spec, row) for spec in ("coco_ablation", "crowdhuman", "date", "fcos")
        for row in dict.fromkeys(c.row for c in expand(load_spec(EXPERIMENTS / f"{spec}.yaml")))]


@pytest.mark.parametrize("spec, row", ROWS, ids=[f"{s}:{r}" for s, r in ROWS])
def test_train_row(run_cli, tmp_path, spec, row):
    # one workspace per row: with the schedule overridden, rows such as POTO and POTO-6x have
    # the same config, hence the same run key (and the second would be skipped as finished)
    workspace = tmp_path
    fmt = "odgt" if spec == "crowdhuman" else "coco"
    extra = ""
    if spec == "fcos":  # synthetic data has no extra split; max_iter replaces fcosv1's epochs
        extra = "data.train_extra: []\ntrain.epochs: null\n"
        extra += "data.letterbox_size: 96\n" if row.startswith("fcosv1") else ""
    over = tiny_overrides(workspace, fmt=fmt, extra=extra)
    code, out, err = run_cli("train", EXPERIMENTS / f"{spec}.yaml", "--row", row, "--workspace", workspace,
                             "--set-file", over)
    assert code == 0, err
    df = runs(workspace, spec)
    mine = df[df["tags.harness.row"] == row]
    assert len(mine) == 1
    r = mine.iloc[0]
    assert r["status"] == "FINISHED"
    assert r["tags.mlflow.runName"] == f"{row}/{'crowdhuman' if spec == 'crowdhuman' else 'coco'}/0"
    for tag in ("run_key", "row", "dataset", "seed", "spec", "git_commit", "attempt"):
        assert r[f"tags.harness.{tag}"] not in (None, ""), tag
    assert r["tags.harness.attempt"] == "1" and r["tags.harness.seed"] == "0"
    assert r["params.model.backbone.name"] == "tiny" and r["params.train.max_iter"] == "2"
    for metric in ("train.loss_cls", "train.loss_box", "train.total_loss", "train.lr", "train.iter_per_s",
                   "train.data_time"):
        assert r[f"metrics.{metric}"] == r[f"metrics.{metric}"], metric  # not NaN
    headline = ["ap50", "mmr", "recall"] if spec == "crowdhuman" else ["ap", "ar100", "ap50"]
    for m in headline:
        for prefix in ("eval.nms.", "eval.nms_free."):
            assert f"metrics.{prefix}{m}" in r.index, prefix + m
        assert f"metrics.eval.{m}" not in r.index, m  # named by its postprocess only (harness.track.names)
