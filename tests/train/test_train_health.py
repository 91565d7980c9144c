"""Training health end to end: a quickstart cell with an absurd learning rate ends FAILED
"diverged: ..." (exit 4) long before max_iter; the zero-detections rule at an evaluation."""

import pytest

from tests.conftest import EXPERIMENTS
from tests.train.helpers import history, runs, tiny_overrides

pytestmark = pytest.mark.slow
QUICK = EXPERIMENTS / "quickstart.yaml"

# The quickstart's FCOS row, small: SGD at lr 10 after a 10-iteration warm-up. Gradient clipping
# at 100 (never reached by a healthy run) keeps the exploded loss finite (~1e4), so it is the
# loss-ratio rule, not a NaN, that ends the run (flagged at iteration 22 with every seed, 1 or 2
# threads).
EXPLODE = """\
model.backbone.pretrain: null
data.synthetic: {num_train: 16, num_val: 4}
train: {optimizer: sgd, base_lr: 10.0, clip_grad_norm: 100.0, max_iter: 60, steps: [], warmup_iters: 10,
        checkpoint_period: 1000}
eval.period: 0
tracking.log_period: 5
"""


def test_absurd_learning_rate_ends_the_run_diverged(run_cli, tmp_path):
    over = tmp_path / "explode.yaml"
    over.write_text(EXPLODE)
    code, _, err = run_cli("train", QUICK, "--row", "FCOS", "--workspace", tmp_path, "--set-file", over)
    assert code == 4, err  # ExitCode.UNHEALTHY
    r = runs(tmp_path, "quickstart").iloc[0]
    assert r["status"] == "FAILED"
    reason = r["tags.harness.failure"]
    assert reason.startswith("diverged: total loss EMA ") and "x its minimum" in reason, reason
    at = int(reason.rsplit("at iteration ", 1)[1])
    assert at < 60  # bounded: flagged, not trained to the end
    assert f"FAILED at iteration {at} " in err and err.rstrip().endswith(f": {reason}"), err
    assert not list(tmp_path.glob("*/checkpoint.pt"))  # none needed
    loss = history(tmp_path, r["run_id"], "train.total_loss")
    assert loss[-1][0] == at and max(v for _, v in loss) > 10 * loss[0][1]  # the explosion is logged
    # the same cell with the rules off trains to the end
    code, _, _ = run_cli("train", QUICK, "--row", "FCOS", "--workspace", tmp_path / "off", "--set-file", over,
                         "--set", "train.health.enabled=false")
    assert code in (0, 3)  # finished, or a NaN (always divergence)


def test_zero_detections_at_an_evaluation_is_divergence(run_cli, tmp_path):
    # score_thresh 0.99: nothing survives; the rule applies from iteration 1 here
    over = tiny_overrides(tmp_path, fmt="odgt", iters=2, extra=(
        "eval.score_thresh: 0.99\ntrain.health: {dets_after: 0.0, dets_min_iter: 0}\n"))
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path, "--set-file", over)
    assert code == 4, err
    r = runs(tmp_path, "quickstart").iloc[0]
    assert r["status"] == "FAILED"
    assert r["tags.harness.failure"] == ("diverged: 0 detections on the whole val set (rule from iteration 1) "
                                         "at iteration 2")
    assert r["metrics.health.eval_dets"] == 0 and "metrics.eval.nms_free.ap50" in r  # the evaluation is logged
    # with the defaults a 2-iteration run is too short for the rule: it finishes
    over = tiny_overrides(tmp_path, fmt="odgt", iters=2, extra="eval.score_thresh: 0.99\n")
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path / "defaults", "--set-file", over)
    assert code == 0, err


def test_an_evaluation_without_useful_detections_is_divergence(run_cli, tmp_path):
    # a 2-iteration model emits detections, but none near a box: AP50 below min_ap 0.99
    over = tiny_overrides(tmp_path, fmt="odgt", iters=2, extra=(
        "eval.score_thresh: 0.0\ntrain.health: {dets_after: 0.0, dets_min_iter: 0, min_ap: 0.99}\n"))
    code, _, err = run_cli("train", QUICK, "--row", "POTO", "--workspace", tmp_path, "--set-file", over)
    assert code == 4, err
    r = runs(tmp_path, "quickstart").iloc[0]
    assert r["status"] == "FAILED" and r["metrics.health.eval_dets"] > 0
    assert r["tags.harness.failure"].startswith("diverged: headline AP ")
    assert r["tags.harness.failure"].endswith("< 99 % (rule from iteration 1) at iteration 2")
