"""The unofficial FCOS recipe: Adam, cosine decay with warm-up, epoch schedules, EMA, sync BN.

The parity tests compare with plain transcriptions of the original's formulas (its
utils/optims_utils.py IterWarmUpCosineDecayMultiStepLRAdjust and split_params,
utils/model_utils.py ModelEMA), written out below in the original's terms.
"""

import contextlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from harness.spec import expand, load_spec, parse_set
from harness.spec.matrix import hashed_config
from harness.spec.schema import TrainConfig
from harness.train.ema import WeightEMA
from harness.train.optim import (
    build_optimizer,
    build_scheduler,
    cosine_factor,
    iters_per_epoch,
    scaled_schedule,
)
from harness.train.session import sync_batchnorm
from tests.conftest import EXPERIMENTS
from tests.train.helpers import runs, tiny_overrides

QUICK = EXPERIMENTS / "quickstart.yaml"


def original_lr(ite, epoch, *, init_lr, epochs, milestones, warm_up_epoch, iter_per_epoch, alpha=0.1):
    """The original's get_lr (gamma, the cosine's power, is 1.0), transcribed."""
    milestones = sorted(milestones)
    last_epoch = epochs + 1 if milestones and milestones[-1] == epochs else epochs
    flag = np.unique(np.array([warm_up_epoch, *milestones, last_epoch]).astype(int))
    current_iter = iter_per_epoch * epoch + ite
    if epoch < warm_up_epoch:
        return float(np.interp(current_iter, [0, warm_up_epoch * iter_per_epoch], [0, init_lr]))
    num_pow = (flag <= epoch).sum() - 1
    weight = alpha ** num_pow
    if num_pow == len(flag) - 2:
        return weight * init_lr
    t = (epoch - flag[num_pow]) * iter_per_epoch + ite
    total = (flag[num_pow + 1] - flag[num_pow]) * iter_per_epoch
    return weight * (((1 + math.cos(t * math.pi / total)) / 2) * (1 - alpha) + alpha) * init_lr


@pytest.mark.parametrize(("epochs", "milestones", "warm"), [
    (24, [18, 24], 0),  # the README's recipe
    (6, [3, 5], 1),
    (6, [4], 0),  # constant after the last milestone below the end
    (5, [], 0),  # no milestones: the original trains a constant lr
    (7, [2, 7], 1),
])
def test_cosine_matches_the_original(epochs, milestones, warm):
    ipe, lr = 5, 1e-4
    for epoch in range(epochs):
        for ite in range(ipe):
            it = epoch * ipe + ite
            ours = lr * cosine_factor(it, warmup_iters=warm * ipe, warmup_factor=0.0,
                                      steps=tuple(m * ipe for m in milestones), gamma=0.1, final=0.1)
            theirs = original_lr(ite, epoch, init_lr=lr, epochs=epochs, milestones=list(milestones),
                                 warm_up_epoch=warm, iter_per_epoch=ipe)
            assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-18), (epoch, ite)


def train_cfg(**kw):
    return TrainConfig(**{"base_lr": 1e-4, "warmup_iters": 0, **kw})


def test_the_scheduler_sets_the_cosine_lr_before_each_step():
    train = train_cfg(max_iter=12, steps=[8, 12], lr_schedule="cosine", optimizer="adam", warmup_factor=0.0,
                      warmup_iters=2, reference_batch=16)
    model = nn.Linear(2, 2)
    sched = scaled_schedule(train, 0)
    opt = build_optimizer(model, train, sched.base_lr)
    scheduler = build_scheduler(opt, sched, train)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    expected = [original_lr(i % 2, i // 2, init_lr=1e-4, epochs=6, milestones=[4, 6], warm_up_epoch=1,
                            iter_per_epoch=2) for i in range(12)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-18)


def original_groups(model, weight_decay):
    """The original's split_params + split_optimizer: (name, weight decay) of every parameter."""
    out = {}
    for k in dict(model.named_parameters()):
        if ".bias" in k:
            out[k] = 0.0
        elif ".weight" in k and ".bn" not in k:
            out[k] = weight_decay
        else:
            out[k] = 0.0
    return out


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.scale = nn.Parameter(torch.ones(()))


def test_adam_decays_only_the_weights_of_non_norm_layers():
    model = nn.Sequential(Block(), nn.Linear(4, 2))
    train = train_cfg(max_iter=10, optimizer="adam", weight_decay=1e-4)
    opt = build_optimizer(model, train, 1e-4)
    assert type(opt) is torch.optim.Adam  # L2 decay, added to the gradient, not AdamW's
    names = {id(p): n for n, p in model.named_parameters()}
    ours = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    # here every norm layer's name carries `.bn`, so the original's name rule and the type rule agree
    assert ours == original_groups(model, 1e-4)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8


def test_adam_step_is_torch_adam_with_l2_weight_decay():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    opt = build_optimizer(a, train_cfg(max_iter=10, optimizer="adam", weight_decay=0.1), 1e-2)
    ref = torch.optim.Adam([{"params": [b.weight], "weight_decay": 0.1}, {"params": [b.bias]}], lr=1e-2)
    x = torch.randn(5, 3)
    for m, o in ((a, opt), (b, ref)):
        for _ in range(3):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_epochs_fix_max_iter_and_steps_from_the_training_set():
    assert iters_per_epoch(117266, 32) == 3665  # the last short batch counts (drop_last False)
    assert iters_per_epoch(64, 32) == 2
    train = train_cfg(epochs=24, steps=[18, 24], lr_schedule="cosine", ims_per_batch=32, reference_batch=16,
                      checkpoint_period=1000)
    s = scaled_schedule(train, 0, num_train=100)
    assert (s.iters_per_epoch, s.max_iter, s.steps) == (4, 96, (72, 96))
    assert s.base_lr == pytest.approx(2e-4) and s.checkpoint_period == 500  # the linear rule: lr, periods
    with pytest.raises(ValueError, match="number of training images"):
        scaled_schedule(train, 0)


def test_max_iter_and_epochs_exclude_each_other():
    with pytest.raises(ValidationError, match="exactly one of max_iter and epochs"):
        train_cfg(max_iter=10, epochs=2)
    with pytest.raises(ValidationError, match="exactly one of max_iter and epochs"):
        train_cfg()
    with pytest.raises(ValidationError, match="step 10 is not below max_iter 10"):
        train_cfg(max_iter=10, steps=[10])
    assert train_cfg(max_iter=10, steps=[10], lr_schedule="cosine").steps == [10]
    with pytest.raises(ValidationError, match="step 3 is not below epochs 2"):
        train_cfg(epochs=2, steps=[3], lr_schedule="cosine")


def test_new_fields_at_their_defaults_keep_the_run_keys():
    cell = next(iter(expand(load_spec(QUICK))))
    train = hashed_config(cell.config)["train"]
    assert not {"epochs", "lr_schedule", "cosine_final", "ema", "sync_bn"} & set(train)
    changed = next(iter(expand(load_spec(QUICK), [parse_set("train.lr_schedule=cosine")])))
    assert changed.run_key != cell.run_key


def original_ema_update(ema_sd, model_sd, updates, decay=0.9999):
    d = decay * (1 - math.exp(-updates / 2000))
    for k, v in ema_sd.items():
        if v.dtype.is_floating_point:
            v *= d
            v += (1. - d) * model_sd[k].detach()


def test_ema_matches_the_original_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ours = WeightEMA(model, decay=0.9999, ramp=2000.0)
    theirs = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, 6):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        opt.step()
        ours.update(model)
        original_ema_update(theirs, model.state_dict(), step)
    for k, v in ours.model.state_dict().items():
        assert torch.equal(v, theirs[k]), k
    assert ours.model.state_dict()["1.num_batches_tracked"] == 0  # integer buffers are not averaged
    assert not ours.model.training and not any(p.requires_grad for p in ours.model.parameters())


def test_sync_bn_converts_batchnorm_only_under_ddp():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4))
    weight = model[1].weight
    assert sync_batchnorm(model, enabled=True, world=1) is model
    assert sync_batchnorm(model, enabled=False, world=2) is model
    converted = sync_batchnorm(model, enabled=True, world=2)
    assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[2], nn.GroupNorm)
    assert converted[1].weight is weight  # the optimizer's parameters stay the same tensors


# ------------------------------------------------------------------------ end to end

RECIPE = ("train.optimizer: adam\ntrain.base_lr: 1.0e-3\ntrain.lr_schedule: cosine\ntrain.warmup_factor: 0.0\n"
          "train.ema: {decay: 0.9999, ramp: 2000}\ntrain.sync_bn: true\ntrain.steps: [3]\n")
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def train(ws, over):
    cmd = [sys.executable, "-m", "harness", "train", str(QUICK), "--row", "FCOS", "--workspace", str(ws),
           "--set-file", str(over)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def ema_weights(ws):
    from harness.train.checkpoint import load

    (path,) = ws.glob("*/checkpoint.pt")
    state = load(path)
    return state["ema"], state["model"], state["iteration"]


def test_harness_train_with_adam_cosine_ema(tmp_path):
    done = train(tmp_path, tiny_overrides(tmp_path, iters=3, ckpt=2, extra=RECIPE))
    assert done.returncode == 0, done.stderr
    assert runs(tmp_path, "quickstart").iloc[0]["status"] == "FINISHED"
    ema, model, it = ema_weights(tmp_path)
    assert it == 3 and ema["updates"] == 3
    assert any(not torch.equal(v, model[k]) for k, v in ema["model"].items() if v.is_floating_point())


class _Tracker:
    def log_metrics(self, *a, **kw):
        pass

    def flush(self):
        pass


class _StopAt:
    def __init__(self, at):
        self.at = at

    def check(self, iteration):
        from harness.train.engine import Stop

        if iteration == self.at:
            raise Stop("stopped by the test", 15)


def _fit(cell, ws, stop_at=None):
    """The worker's session, loop and checkpoint in this process, without tracking or evaluation."""
    from harness.data.build import train_dataset
    from harness.data.loader import train_loader
    from harness.train.engine import LoopContext, Progress, Stop, fit
    from harness.train.session import Resume, prepare, save_checkpoint, take_over

    s = prepare(cell, workspace=ws, resume=Resume.AUTO, spec_file=None)
    take_over(s, Resume.AUTO)
    cfg = s.cfg
    loader = train_loader(train_dataset(cfg.data, s.data.train, cfg.model.backbone.input_format),
                          cfg.train.ims_per_batch, seed=cfg.seed, rank=0, world_size=1, start_iter=s.start_iter,
                          num_workers=0, divisibility=cfg.data.size_divisibility)
    loop = LoopContext(_StopAt(stop_at), _Tracker(), Progress(s.sched.max_iter, s.start_iter, 1, "t", enabled=False),
                       lambda it: save_checkpoint(s, it), lambda it, final: None)
    with contextlib.suppress(Stop):
        fit(s, iter(loader), loop)
    return s


def test_ema_resumes_bit_exactly(tmp_path):
    from harness.schedule.job import Overrides

    over = Overrides.of(files=[str(tiny_overrides(tmp_path, iters=4, ckpt=10, extra=RECIPE))])
    cell = next(c for c in expand(load_spec(QUICK), over.parsed()) if c.row == "FCOS")
    whole = _fit(cell, tmp_path / "a")
    first = _fit(cell, tmp_path / "b", stop_at=2)
    assert first.iteration == 2 and first.ema.updates == 2
    resumed = _fit(cell, tmp_path / "b")
    assert resumed.start_iter == 2 and resumed.iteration == 4
    assert whole.ema.updates == resumed.ema.updates == 4
    for (k, v), (k2, v2) in zip(whole.ema.model.state_dict().items(), resumed.ema.model.state_dict().items(),
                                strict=True):
        assert k == k2 and torch.equal(v, v2), k


def test_epochs_on_synthetic_data_fix_max_iter_before_training(tmp_path):
    from harness.schedule.job import Overrides
    from harness.train.session import Resume, prepare

    extra = RECIPE.replace("train.steps: [3]\n", "") + "train.max_iter: null\ntrain.epochs: 2\ntrain.steps: [1, 2]\n"
    over = Overrides.of(files=[str(tiny_overrides(tmp_path, batch=4, extra=extra))])
    cell = next(c for c in expand(load_spec(QUICK), over.parsed()) if c.row == "FCOS")
    s = prepare(cell, workspace=tmp_path, resume=Resume.AUTO, spec_file=None)
    n = len(s.data.train)
    assert s.sched.iters_per_epoch == math.ceil(n / 4) and s.sched.max_iter == 2 * s.sched.iters_per_epoch
    assert s.sched.steps == (s.sched.iters_per_epoch, 2 * s.sched.iters_per_epoch)
