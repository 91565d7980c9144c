"""model.backbone.pretrain: one shared pre-training per workspace, loaded by every cell naming it."""

import pytest
import torch
from pydantic import ValidationError

from harness.model.build import build_from_config
from harness.spec import expand, load_spec
from harness.spec.matrix import hashed_config, run_key
from harness.spec.schema import BackboneConfig
from harness.train.pretrain import pretrain_config, pretrained_backbone
from tests.conftest import EXPERIMENTS
from tests.train.helpers import runs, tiny_overrides

PRETRAIN = "model.backbone.pretrain: {iters: 3, num_images: 4, data_seed: 5, steps: []}\n"


def quickstart_cells():
    return list(expand(load_spec(EXPERIMENTS / "quickstart.yaml")))


def test_every_quickstart_cell_shares_one_pretraining_on_other_images():
    cells = quickstart_cells()
    assert all(c.config.model.backbone.pretrain is not None for c in cells)
    pcfgs = [pretrain_config(c.config) for c in cells]
    # five rows (DATE-F with its mmdet FPN and o2m branch included) and three seeds: one backbone
    assert len({run_key(p) for p in pcfgs}) == 1
    p, cell = pcfgs[0], cells[0].config
    assert p.model.predictor.assigner.name == "fcos" and p.model.o2m is None and p.model.aux is None
    assert p.model.fpn.name == "cvpods" and p.model.backbone.pretrain is None
    assert p.model.backbone.model_dump(exclude={"pretrain"}) == cell.model.backbone.model_dump(exclude={"pretrain"})
    # scenes of another generator seed: none of the cell's training or validation images
    assert p.data.synthetic.seed == cell.model.backbone.pretrain.data_seed != cell.data.synthetic.seed
    pre = cell.model.backbone.pretrain
    assert p.train.max_iter == pre.iters and p.train.steps == pre.steps and p.train.base_lr == pre.base_lr
    assert p.train.optimizer == pre.optimizer and p.train.ims_per_batch == pre.ims_per_batch
    assert p.data.train_min_size == cell.data.train_min_size and p.data.synthetic.crowd == cell.data.synthetic.crowd
    assert p.seed == cell.model.backbone.pretrain.seed


def test_pretrain_is_keyless_when_absent_and_part_of_the_key_when_set():
    coco = next(iter(expand(load_spec(EXPERIMENTS / "coco_ablation.yaml")))).config
    assert "pretrain" not in hashed_config(coco)["model"]["backbone"]
    qs = quickstart_cells()[0].config
    assert hashed_config(qs)["model"]["backbone"]["pretrain"]["iters"] == qs.model.backbone.pretrain.iters
    other = qs.model_copy(update={"model": qs.model.model_copy(update={"backbone": qs.model.backbone.model_copy(
        update={"pretrain": qs.model.backbone.pretrain.model_copy(update={"seed": 7})})})})
    assert run_key(other) != run_key(qs)


def test_the_pretraining_follows_the_backbone_not_the_cells_recipe():
    from harness.spec import parse_set

    def key(*sets):
        cell = next(iter(expand(load_spec(EXPERIMENTS / "quickstart.yaml"), [parse_set(s) for s in sets])))
        return run_key(pretrain_config(cell.config))

    base = key()
    # a sweep over the cell's recipe or losses shares the pre-training, as it would a checkpoint
    assert key("train.base_lr=0.004", "train.warmup_iters=50", "train.max_iter=900") == base
    assert key("model.predictor.loss.box_weight=3.0", "eval.score_thresh=0.1") == base
    # the backbone, the scenes and the pre-training's own recipe make another
    assert key("model.backbone.tiny_width=12") != base
    assert key("data.train_min_size=[128]") != base
    assert key("model.backbone.pretrain.base_lr=0.001") != base
    with pytest.raises(ValidationError, match="steps must be increasing and below iters"):
        BackboneConfig(name="tiny", norm="gn", pretrain={"iters": 400})


def test_only_the_tiny_backbone_without_weights_pretrains():
    with pytest.raises(ValidationError, match="pretrain: only for the tiny backbone"):
        BackboneConfig(name="resnet50", pretrain={})
    with pytest.raises(ValidationError, match="pretrain: only for the tiny backbone"):
        BackboneConfig(name="tiny", norm="gn", weights="w.pth", pretrain={})


def _tiny_cell(tmp_path):
    from harness.spec import parse_set

    sets = [parse_set(s) for s in (
        "model.backbone.pretrain={iters: 3, num_images: 4, data_seed: 5, steps: []}",
        "data.synthetic={num_train: 4, num_val: 2, min_size: 64, max_size: 64, crowd: high, format: odgt, seed: 0}",
        "data.train_min_size=[64]", "data.train_max_size=64", "train.max_iter=4", "train.steps=[]",
        "train.warmup_iters=1", "train.ims_per_batch=2", "train.reference_batch=2")]
    return next(iter(expand(load_spec(EXPERIMENTS / "quickstart.yaml"), sets))).config


def test_the_cache_is_made_once_deterministic_and_leaves_the_callers_random_state(tmp_path):
    cfg = _tiny_cell(tmp_path)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    logged = []
    a, path_a = pretrained_backbone(cfg, tmp_path / "one", log=logged.append)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert len(logged) == 2 and "pre-training the tiny backbone (3 iterations" in logged[0]
    mtime = (tmp_path / "one" / "pretrain").joinpath(path_a.split("/")[-1]).stat().st_mtime_ns
    again, _ = pretrained_backbone(cfg, tmp_path / "one", log=logged.append)
    assert len(logged) == 2  # found, not trained again
    assert (tmp_path / "one" / "pretrain").joinpath(path_a.split("/")[-1]).stat().st_mtime_ns == mtime
    b, _ = pretrained_backbone(cfg, tmp_path / "two", log=logged.append)  # a fresh workspace
    assert a.keys() == again.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], again[k]) for k in a)
    # trained: not the random draw of the pre-training seed
    torch.manual_seed(cfg.model.backbone.pretrain.seed)
    fresh = build_from_config(pretrain_config(cfg)).backbone.state_dict()
    assert any(not torch.equal(fresh[k], a[k]) for k in a)


@pytest.mark.slow
def test_a_cell_starts_from_the_shared_backbone(run_cli, tmp_path):
    # lr 1e-12: two steps leave the weights where the cell started, so the checkpoint shows
    # whether the cell started from the cached pre-training or from its own random draw
    over = tiny_overrides(tmp_path, fmt="odgt", iters=2, size=64, extra=PRETRAIN + "train.base_lr: 1.0e-12\n")
    code, out, err = run_cli("train", EXPERIMENTS / "quickstart.yaml", "--row", "POTO", "--workspace", tmp_path,
                             "--set-file", over)
    assert code == 0, err
    files = sorted((tmp_path / "cache" / "pretrain").glob("*.pt"))
    assert len(files) == 1 and "pre-training the tiny backbone (3 iterations" in out
    cached = torch.load(files[0], weights_only=True)
    df = runs(tmp_path, "quickstart")
    run = df.iloc[0]
    assert run["status"] == "FINISHED" and run["tags.harness.pretrain"] == files[0].stem
    ckpt = torch.load(tmp_path / run["tags.harness.run_key"] / "checkpoint.pt", weights_only=False)["model"]
    for k, v in cached.items():
        torch.testing.assert_close(ckpt[f"backbone.{k}"], v, rtol=0, atol=1e-8)
    # another row, another seed: the same file, not trained again
    code, out, err = run_cli("train", EXPERIMENTS / "quickstart.yaml", "--row", "DATE-F", "--seed", "1",
                             "--workspace", tmp_path, "--set-file", over)
    assert code == 0, err
    assert "pre-training the tiny backbone" not in out
    assert sorted((tmp_path / "cache" / "pretrain").glob("*.pt")) == files


def test_a_second_cell_waits_for_the_first_ones_pretraining(tmp_path):
    import fcntl
    import threading

    from harness.spec.matrix import run_key as key_of

    cfg = _tiny_cell(tmp_path)
    folder = tmp_path / "pretrain"
    folder.mkdir()
    name = key_of(pretrain_config(cfg))[:24]
    logged, result = [], {}
    with open(folder / f"{name}.lock", "a") as held:  # another cell is training it
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: result.update(
            out=pretrained_backbone(cfg, tmp_path, log=logged.append)))
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive() and logged and logged[0].startswith("waiting for another cell's pre-training")
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(timeout=120)
    assert not worker.is_alive() and result["out"][1].endswith(f"{name}.pt")


def test_a_diverging_pretraining_fails_as_diverged(tmp_path):
    from harness.train.engine import NonFiniteLoss

    cfg = _tiny_cell(tmp_path)
    bb = cfg.model.backbone
    wild = bb.pretrain.model_copy(update={"base_lr": 1e30, "clip_grad_norm": None})
    absurd = cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": bb.model_copy(
        update={"pretrain": wild})})})
    with pytest.raises(NonFiniteLoss, match=r"diverged: non-finite loss pre-training \w+ = \S+ at iteration \d+"):
        pretrained_backbone(absurd, tmp_path, log=lambda m: None)
    assert not list((tmp_path / "pretrain").glob("*.pt"))  # nothing half-written
