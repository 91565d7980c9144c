"""The training-health rules (harness/train/health.py) on hand-written loss histories, their
state through a checkpoint, and a replay of healthy quickstart runs (never flagged)."""

import json
import math
from pathlib import Path

import pytest

from harness.spec import expand, load_spec, parse_set
from harness.spec.errors import UserError
from harness.spec.schema import HealthConfig
from harness.train.health import HealthMonitor, build_monitor
from tests.conftest import EXPERIMENTS

FIXTURE = Path(__file__).parent / "data" / "quickstart_loss_histories.json"


def first_flag(monitor: HealthMonitor, losses, start: int = 1):
    """(iteration, reason) of the first flag while feeding losses from `start`, else None."""
    for i, loss in enumerate(losses, start):
        reason = monitor.update(i, loss)
        if reason:
            return i, reason
    return None


def test_explosion_is_flagged_at_the_right_iteration_with_its_numbers():
    # 1.4 for 59 iterations, then 25 and flat: with ema 0.9 the EMA is 3.76 at 60 and 5.88 at 61
    # (> 4 x 1.4 = 5.6), so the 20th consecutive iteration above the line is 80
    m = HealthMonitor(ema=0.9, loss_ratio=4.0, window=20)
    it, reason = first_flag(m, [1.4] * 59 + [25.0] * 100)
    assert it == 80
    assert reason.startswith("diverged: total loss EMA ")
    assert reason.endswith("> 4 x its minimum 1.4 for 20 iterations at iteration 80")
    ema = 25 - (25 - 1.4) * 0.9 ** 21  # the EMA after 21 iterations at 25
    assert f"EMA {ema:.4g} " in reason


def test_explosion_with_the_defaults_is_flagged_within_about_30_iterations():
    m = build_monitor(HealthConfig(), max_iter=280, warmup_iters=50)
    it, reason = first_flag(m, [2.8 - i / 60 for i in range(59)] + [25.0] * 200)
    assert 60 + 20 <= it <= 60 + 40, reason
    assert reason.startswith("diverged:") and reason.endswith(f"at iteration {it}")


def test_spikes_shorter_than_the_window_are_not_flagged():
    spike = [1.0] * 30 + [10.0] * 19 + [1.0] * 30
    assert first_flag(HealthMonitor(ema=0.0, window=20), spike * 5) is None
    longer = [1.0] * 30 + [10.0] * 20 + [1.0] * 30
    assert first_flag(HealthMonitor(ema=0.0, window=20), longer) == (
        50, "diverged: total loss EMA 10 > 4 x its minimum 1 for 20 iterations at iteration 50")
    # one batch 50x the loss (a bad batch), every 25 iterations: the defaults do not care
    bad_batches = [50.0 if i % 25 == 0 else 1.0 for i in range(1, 1000)]
    assert first_flag(build_monitor(HealthConfig(), max_iter=1000, warmup_iters=50), bad_batches) is None


def test_early_warm_up_rise_is_not_flagged():
    """Like POTO in the quickstart: the loss falls during warm-up, then rises ~2x for a hundred
    iterations while positives start being learned, with single batches up to 6x, then falls."""
    losses = [3.1 - 1.8 * i / 45 for i in range(45)]  # 3.1 -> 1.3
    rise = [1.3 + 1.2 * min(1.0, i / 20) for i in range(100)]  # -> 2.5 and stays
    for i in (26, 40, 55):
        rise[i] = 8.75
    losses += rise + [2.5 - 1.2 * i / 100 for i in range(100)] + [1.3] * 35
    assert first_flag(build_monitor(HealthConfig(), max_iter=280, warmup_iters=50), losses) is None
    # the same with the running minimum taken at the very bottom (min_iter 0) and a 0.9 EMA
    assert first_flag(HealthMonitor(ema=0.9), losses) is None


def test_min_iter_keeps_early_losses_out_of_the_minimum():
    losses = [0.1] * 10 + [1.0] * 100
    assert first_flag(HealthMonitor(ema=0.0, min_iter=0), losses)[0] == 30
    assert first_flag(HealthMonitor(ema=0.0, min_iter=11), losses) is None


def test_zero_detections_are_flagged_only_from_the_configured_point():
    cfg = HealthConfig()
    m = build_monitor(cfg, max_iter=280, warmup_iters=50)
    assert m.dets_from == max(50, math.ceil(cfg.dets_after * 280), cfg.dets_min_iter) == 210
    assert m.check_eval(70, 0) is None and m.check_eval(140, 0) is None  # a slow start is not divergence
    assert m.check_eval(210, 5) is None
    assert m.check_eval(280, 0) == ("diverged: 0 detections on the whole val set (rule from iteration 210) "
                                    "at iteration 280")
    # warm-up and the floor: whichever is last
    assert build_monitor(cfg, max_iter=100_000, warmup_iters=80_000).dets_from == 80_000
    assert build_monitor(cfg, max_iter=40, warmup_iters=1).dets_from == cfg.dets_min_iter
    assert build_monitor(HealthConfig(dets_after=None), max_iter=280, warmup_iters=50).check_eval(280, 0) is None
    early = build_monitor(HealthConfig(dets_after=0.0, dets_min_iter=0), max_iter=10, warmup_iters=1)
    assert early.check_eval(1, 0) and early.check_eval(0, 0) is None


def test_disabled_never_flags():
    m = build_monitor(HealthConfig(enabled=False), max_iter=280, warmup_iters=50)
    assert first_flag(m, [1.0] * 10 + [1e6] * 500) is None
    assert m.check_eval(280, 0) is None
    assert first_flag(m, [float("nan")]) is None


def test_a_non_finite_loss_is_divergence():
    assert first_flag(HealthMonitor(), [1.0, 1.0, float("inf")]) == (
        3, "diverged: non-finite total loss inf at iteration 3")


def test_state_survives_a_resume():
    losses = [1.4] * 59 + [25.0] * 100
    whole = first_flag(HealthMonitor(), losses)
    for cut in (1, 30, 60, 70, 75):
        before = HealthMonitor()
        assert first_flag(before, losses[:cut]) is None
        state = json.loads(json.dumps(before.state_dict()))  # plain numbers
        after = HealthMonitor()
        after.load_state_dict(state)
        assert first_flag(after, losses[cut:], start=cut + 1) == whole, cut
    fresh = HealthMonitor()
    fresh.load_state_dict(None)  # a checkpoint from before health existed
    assert fresh.state_dict() == HealthMonitor().state_dict()


def test_state_in_a_checkpoint(tmp_path):
    import torch

    from harness.train import checkpoint as ckpt

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    m = HealthMonitor()
    first_flag(m, [3.0, 2.0, 2.5])
    ckpt.save(tmp_path / "c.pt", model=model, optimizer=opt, scheduler=sched, scaler=None, iteration=3,
              run_id="r", run_key="k", health=m.state_dict())
    state = ckpt.load(tmp_path / "c.pt")  # weights_only=True
    assert state["health"] == m.state_dict()
    old = {k: v for k, v in state.items() if k != "health"}  # written before health existed
    again = HealthMonitor()
    again.load_state_dict(old.get("health"))
    assert again.smoothed is None and again.above == 0


def test_the_section_is_strict_and_overridable(tmp_path):
    with pytest.raises(ValueError, match="extra"):
        HealthConfig(windw=3)
    spec = load_spec(EXPERIMENTS / "quickstart.yaml")
    cells = expand(spec, [parse_set("train.health.enabled=false"), parse_set("train.health.loss_ratio=8")])
    assert not cells[0].config.train.health.enabled and cells[0].config.train.health.loss_ratio == 8.0
    with pytest.raises(UserError):
        expand(spec, [parse_set("train.health.loss_ratio=0.5")])
    # the rules never change what is trained: not part of the run key
    assert [c.run_key for c in cells] == [c.run_key for c in expand(spec)]


def test_healthy_quickstart_histories_are_never_flagged():
    """Replays tests/train/data/quickstart_loss_histories.json (written by make_health_fixture.py
    from healthy runs) with the quickstart's own train.health and schedule. Histories logged
    every N > 1 iterations hold window means: each is fed for every iteration of its window."""
    from harness.train.optim import scaled_schedule

    histories = json.loads(FIXTURE.read_text())
    assert histories
    cells = {c.id: c for c in expand(load_spec(EXPERIMENTS / "quickstart.yaml"))}
    for cid, h in histories.items():
        if cid not in cells:
            pytest.fail(f"{FIXTURE.name}: {cid} is not a cell of quickstart.yaml; regenerate the fixture "
                        "(tests/train/data/make_health_fixture.py)")
        cfg = cells[cid].config
        sched = scaled_schedule(cfg.train, cfg.eval.period)
        m = build_monitor(cfg.train.health, max_iter=sched.max_iter, warmup_iters=sched.warmup_iters)
        assert len(h["iterations"]) == len(h["total_loss"]) and len(h["eval_iterations"]) == len(h["eval_dets"])
        evals = dict(zip(h["eval_iterations"], h["eval_dets"], strict=True))
        for it, ap in zip(h["eval_iterations"], h.get("eval_ap", []), strict=False):
            assert m.check_quality(it, ap) is None, cid
        prev = 0
        for step, loss in zip(h["iterations"], h["total_loss"], strict=True):
            for it in range(prev + 1, step + 1):
                assert m.update(it, loss) is None, cid
                if it in evals:
                    assert m.check_eval(it, evals.pop(it)) is None, cid
            prev = step
        for it, n in evals.items():
            assert m.check_eval(it, n) is None, cid
        assert m.minimum is not None and m.smoothed < cfg.train.health.loss_ratio * m.minimum


def test_no_useful_detections_rule():
    m = HealthMonitor(dets_from=450, min_ap=0.001)
    assert m.check_quality(300, 0.0) is None  # before the rule's first iteration
    assert m.check_quality(450, 0.5) is None
    assert m.check_quality(600, 0.0) == (
        "diverged: headline AP 0.00 % < 0.1 % (rule from iteration 450) at iteration 600")
    assert m.check_quality(600, float("nan")) is None  # no metric (e.g. no ground truth): not this rule
    assert HealthMonitor(dets_from=450, min_ap=None).check_quality(600, 0.0) is None
    assert HealthMonitor(enabled=False, dets_from=450, min_ap=0.001).check_quality(600, 0.0) is None
