"""A cell's training session: everything `harness train` builds before it trains, checked first.

`prepare` checks what a user can get wrong (batch split, class count, evaluator, weights, the
checkpoint) and builds the model, optimizer, schedule, scaler and health rules; it writes
nothing, so bad input leaves no trace. `take_over` runs under the cell's lock: it builds the
data cache, sets an old checkpoint aside (`Resume.FRESH`) or re-reads one written since
`prepare`, and wraps the model for DDP.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
import torch.distributed as dist

from harness.data.build import Datasets, load_datasets
from harness.data.synthetic import synthetic_kind
from harness.model.backbone import WeightsError
from harness.model.build import build_from_config
from harness.spec.errors import Problem, UserError
from harness.spec.matrix import Cell
from harness.spec.workspace import CellPaths
from harness.train import checkpoint as ckpt
from harness.train.ema import WeightEMA
from harness.train.engine import unwrap
from harness.train.health import HealthMonitor, build_monitor
from harness.train.optim import Schedule, build_optimizer, build_scheduler, scaled_schedule
from harness.train.pretrain import pretrained_backbone


class Resume(Enum):
    """What to do with the cell's checkpoint."""

    AUTO = "auto"  # resume when it exists
    MUST = "must"  # resume; no checkpoint is an error (`--resume`)
    FRESH = "fresh"  # set it aside and start a new run (`--fresh`)

    @classmethod
    def of(cls, *, fresh: bool, resume: bool) -> Resume:
        return cls.FRESH if fresh else cls.MUST if resume else cls.AUTO


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (one process without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class Session:
    """A cell's pieces, built and checked before anything is written."""

    cell: Cell
    paths: CellPaths
    ranks: Ranks
    device: torch.device
    data: Datasets | None  # None: the synthetic dataset, generated into the cache under the lock
    model: torch.nn.Module  # wrapped in DDP by take_over when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    sched: Schedule
    health: HealthMonitor
    ema: WeightEMA | None = None  # train.ema: the averaged weights, evaluated and checkpointed
    checkpoint: tuple | None = None  # the (inode, size, mtime) of the checkpoint loaded, if any
    start_iter: int = 0  # the checkpoint's iteration (0: a new run)
    run_id: str | None = None  # the checkpoint's MLflow run, then the run this session writes
    iteration: int = 0  # the last iteration trained (`engine.fit` keeps it)
    attempt: int | None = None  # the run's attempt in MLflow, once its run is open
    #: the last step an earlier attempt of the run logged: a resume from an older checkpoint
    #: replays the iterations up to it without logging them twice
    logged_until: int = 0

    @property
    def cfg(self):
        return self.cell.config

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights evaluation scores: the EMA's when train.ema is set, else the model's."""
        return self.ema.model if self.ema is not None else self.model


def _amp(train, device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    if not train.amp or device.type != "cuda":
        return None, None  # CPU: full precision
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _check_inputs(cell: Cell, workspace: Path, world: int, spec_file: str | None) -> Datasets | None:
    """The data files, class count and evaluator against the config; the data unless synthetic."""
    cfg = cell.config
    if cfg.train.ims_per_batch % world:
        raise UserError(Problem(spec_file, None, "train.ims_per_batch",
                                f"{cfg.train.ims_per_batch} images do not split over {world} processes"))
    if cfg.data.name == "synthetic":  # generated on first use: checked without generating it
        data = None
        kind, classes = synthetic_kind(cfg.data.synthetic.format)
    else:
        data = load_datasets(cfg.data, CellPaths.of(workspace, cell.run_key).cache)
        kind, classes = data.info.kind, len(data.info.class_names)
    if classes != cfg.model.num_classes:
        raise UserError(Problem(spec_file, None, "model.num_classes",
                                f"{cfg.model.num_classes}, but the dataset has {classes} classes"))
    if cfg.eval.metrics != kind:
        raise UserError(Problem(spec_file, None, "eval.metrics",
                                f"{cfg.eval.metrics!r} needs {cfg.eval.metrics} annotations; this dataset has {kind}"))
    return data


def prepare(cell: Cell, *, workspace: str | Path, resume: Resume, spec_file: str | None) -> Session:
    """Check the inputs and build the model, optimizer and schedule; writes nothing."""
    cfg, ranks = cell.config, Ranks.from_env()
    device = torch.device(f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu")
    data = _check_inputs(cell, Path(workspace), ranks.world, spec_file)
    if data is None and cfg.train.epochs is not None:
        # an epoch schedule needs the number of training images before anything is built: the
        # synthetic images are generated here (a shared cache, written atomically) instead of
        # under the lock
        data = load_datasets(cfg.data, CellPaths.of(workspace, cell.run_key).cache)
    torch.manual_seed(cfg.seed)
    t_build = time.time()
    try:
        model = build_from_config(cfg).to(device)
    except WeightsError as exc:
        raise UserError(Problem(spec_file, None, "model.backbone.weights", str(exc))) from None
    if cfg.train.channels_last:
        model = model.to_channels_last()
    if ranks.main:
        print(f"{cell.id}: model built in {time.time() - t_build:.2f} s", flush=True)
    sched = scaled_schedule(cfg.train, cfg.eval.period, None if data is None else len(data.train))
    optimizer = build_optimizer(model, cfg.train, sched.base_lr)
    amp_dtype, scaler = _amp(cfg.train, device)
    health = build_monitor(cfg.train.health, max_iter=sched.max_iter, warmup_iters=sched.warmup_iters)
    ema = None if cfg.train.ema is None else WeightEMA(model, decay=cfg.train.ema.decay, ramp=cfg.train.ema.ramp)
    s = Session(cell, CellPaths.of(workspace, cell.run_key), ranks, device, data, model, optimizer,
                build_scheduler(optimizer, sched, cfg.train), scaler, amp_dtype, sched, health, ema)
    if resume is not Resume.FRESH and s.paths.checkpoint.exists():
        load_checkpoint(s)
    elif resume is Resume.MUST:
        raise _no_checkpoint(s)
    return s


def _no_checkpoint(s: Session) -> UserError:
    return UserError(Problem(None, None, "--resume", f"no checkpoint for cell {s.cell.id} at {s.paths.checkpoint}"))


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def load_checkpoint(s: Session) -> None:
    """Restore model, optimizer, schedule, scaler, RNG and health from the cell's checkpoint; a
    file that cannot be read or does not fit the cell is one clear error saying how to go on."""
    path = s.paths.checkpoint
    stamp = _stamp(path)
    try:
        state = ckpt.load(path)
        owner = state.get("run_key")
        if owner == s.cell.run_key:
            unwrap(s.model).load_state_dict(state["model"])
            s.optimizer.load_state_dict(state["optimizer"])
            s.scheduler.load_state_dict(state["scheduler"])
            if s.scaler is not None and state["scaler"]:
                s.scaler.load_state_dict(state["scaler"])
            ckpt.set_rng_state(state["rng"])
            s.health.load_state_dict(state.get("health"))  # absent in checkpoints from before health
            if s.ema is not None:
                s.ema.load_state_dict(state["ema"])
            start_iter, run_id = int(state["iteration"]), state["run_id"] or None
            if not isinstance(run_id, str | None):
                raise TypeError(f"run_id is {type(run_id).__name__}")
    except Exception as exc:  # truncated, not a checkpoint, refused by weights_only, another model
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise _refused(path, f"cannot resume from this checkpoint ({type(exc).__name__}"
                             f"{': ' + first if first else ''})") from None
    if owner != s.cell.run_key:  # copied from another cell: never adopted (its run is another cell's)
        raise _refused(path, f"this checkpoint belongs to another cell (run key {str(owner)[:12]}…, this cell's is "
                             f"{s.cell.run_key[:12]}…); it was not resumed")
    s.checkpoint, s.start_iter, s.run_id = stamp, start_iter, run_id


def _refused(path: Path, why: str) -> UserError:
    return UserError(Problem(str(path), None, "", (
        f"{why}; move the file aside to keep it, or run `harness train` with --fresh to set it aside "
        "and start the cell again")))


def take_over(s: Session, resume: Resume) -> None:
    """Under the cell's lock: join the process group, build the data cache, set aside or re-read
    the checkpoint as it is now, and wrap the model for DDP."""
    if s.ranks.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if s.device.type == "cuda":
        torch.cuda.set_device(s.device)
        torch.backends.cudnn.benchmark = True
    s.paths.workspace.mkdir(parents=True, exist_ok=True)
    if s.data is None:
        s.data = load_datasets(s.cfg.data, s.paths.cache)
    path = s.paths.checkpoint
    if s.ranks.main:
        for tmp in ckpt.leftovers(path):  # a save a kill -9 cut short; the lock says nobody writes it
            tmp.unlink(missing_ok=True)
    if resume is Resume.FRESH and path.exists() and s.ranks.main:
        os.replace(path, s.paths.set_aside(int(time.time())))
    if resume is not Resume.FRESH and _stamp(path) != s.checkpoint:  # written since prepare read it
        if path.exists():
            load_checkpoint(s)
        elif resume is Resume.MUST:
            raise _no_checkpoint(s)
    if s.ranks.world > 1:
        s.model = sync_batchnorm(s.model, enabled=s.cfg.train.sync_bn, world=s.ranks.world)
        s.model = torch.nn.parallel.DistributedDataParallel(
            s.model, device_ids=[s.ranks.local_rank] if s.device.type == "cuda" else None)


def sync_batchnorm(model: torch.nn.Module, *, enabled: bool, world: int) -> torch.nn.Module:
    """train.sync_bn: BatchNorm layers become SyncBatchNorm (statistics over every process's
    images) when more than one process trains; the same parameter and buffer tensors are kept,
    so the optimizer and a loaded checkpoint stay valid. One process: the model as it is."""
    if not enabled or world <= 1:
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def leave_process_group() -> None:
    """Tear the process group down before the interpreter exits: left to exit, gloo's threads can
    abort the process ("terminate called without an active exception") after a run that finished."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def save_checkpoint(s: Session, iteration: int) -> None:
    """The resume point (rank 0 writes it)."""
    if s.ranks.main:
        ckpt.save(s.paths.checkpoint, model=unwrap(s.model), optimizer=s.optimizer, scheduler=s.scheduler,
                  scaler=s.scaler, iteration=iteration, run_id=s.run_id, run_key=s.cell.run_key,
                  health=s.health.state_dict(), ema=None if s.ema is None else s.ema.state_dict())


def load_pretrained(s: Session) -> str:
    """Replace the tiny backbone's random draw by the workspace's shared pre-training (rank 0
    trains or finds it, the others read the file it leaves); the pre-training's name."""
    def load():
        return pretrained_backbone(s.cfg, s.paths.cache, device=s.device,
                                   log=lambda m: print(f"{s.cell.id}: {m}", flush=True))

    if s.ranks.main:
        state, path = load()
    if s.ranks.world > 1:
        dist.barrier()
    if not s.ranks.main:
        state, path = load()
    unwrap(s.model).backbone.load_state_dict(state)
    return Path(path).stem
