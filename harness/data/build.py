"""Spec -> datasets: the only place of harness/data that reads a config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from harness.data.loader import DetectionDataset
from harness.data.records import (
    DatasetInfo,
    ImageRecord,
    check_images_exist,
    load_coco,
    load_crowdhuman,
)
from harness.data.synthetic import ensure_dataset
from harness.data.transforms import EvalTransform, TrainTransform
from harness.formats.paths import expand_vars, redact
from harness.spec.errors import DataError, Problem
from harness.spec.schema import DataConfig

expand_path = expand_vars


@dataclass
class Datasets:
    train: list[ImageRecord]
    val: list[ImageRecord]
    info: DatasetInfo  # of the val split


LOADERS = {"coco": load_coco, "crowdhuman": load_crowdhuman}


def _split(cfg: DataConfig, root: Path, which: str):
    split = getattr(cfg, which)
    ann = Path(expand_path(split.annotations, f"data.{which}.annotations"))
    images = Path(expand_path(split.images, f"data.{which}.images"))
    ann = ann if ann.is_absolute() else root / ann
    images = images if images.is_absolute() else root / images
    if not ann.exists():
        raise DataError(Problem(str(ann), None, f"data.{which}.annotations", "annotation file not found"))
    return LOADERS[cfg.name](ann, images, gt_filter=cfg.gt_filter if which == "train" else "positive")


def select_val(val: list[ImageRecord], info: DatasetInfo,
               images: tuple[int, int]) -> tuple[list[ImageRecord], DatasetInfo]:
    """`data.val_images`: the val records at positions start..stop-1 and the GT cut to them.

    COCO keeps the selected images and their annotations (categories and the rest as they are);
    CrowdHuman keeps the odgt records of those lines. New lists and dicts: what the loader
    returned is not changed.
    """
    start, stop = images
    if stop > len(val):
        raise DataError(Problem(info.annotation_file, None, "data.val_images",
                                f"[{start}, {stop}] needs {stop} val images; the split has {len(val)}"))
    kept = val[start:stop]
    if info.kind == "coco":
        ids = {r.image_id for r in kept}
        gt = {**info.gt, "images": [im for im in info.gt["images"] if im["id"] in ids],
              "annotations": [a for a in info.gt["annotations"] if a["image_id"] in ids]}
    else:  # one odgt record per line, one val record per odgt record, in file order
        gt = info.gt[start:stop]
    return kept, replace(info, gt=gt)


def load_datasets(cfg: DataConfig, cache_dir: str | Path, *, check_files: bool = True) -> Datasets:
    """Train and val records; the synthetic dataset is generated into the cache on first use."""
    if cfg.name == "synthetic":
        s = cfg.synthetic
        folder = ensure_dataset(cache_dir, num_train=s.num_train, num_val=s.num_val, seed=s.seed,
                                crowd=s.crowd, fmt=s.format, min_size=s.min_size,
                                max_size=s.max_size, ignore_regions=s.ignore_regions,
                                val_range=cfg.val_images)
        ext, loader = (".json", load_coco) if s.format == "coco" else (".odgt", load_crowdhuman)
        train, _ = loader(folder / f"train{ext}", folder / "train", gt_filter=cfg.gt_filter)
        val, info = loader(folder / f"val{ext}", folder / "val")  # only val_images were generated
        if check_files:
            check_images_exist(train, "train annotations")
            check_images_exist(val, info.annotation_file)
    else:
        templates = (cfg.root, cfg.train.annotations, cfg.train.images, cfg.val.annotations, cfg.val.images)
        try:
            root = Path(expand_path(cfg.root)) if cfg.root else Path(".")
            train, _ = _split(cfg, root, "train")
            val, info = _split(cfg, root, "val")
            if cfg.val_images is not None:
                val, info = select_val(val, info, cfg.val_images)
            if check_files:
                check_images_exist(train, "train annotations")
                check_images_exist(val, info.annotation_file)
        except DataError as exc:  # names the files, never a variable's value that is not a path
            raise DataError([replace(p, file=p.file and redact(p.file, *templates),
                                     message=redact(p.message, *templates)) for p in exc.problems]) from None
    if cfg.filter_empty:
        train = [r for r in train if len(r.boxes)]
    if not train:
        raise DataError(Problem(None, None, "data", "no training images with boxes"))
    return Datasets(train, val, info)


def train_dataset(cfg: DataConfig, records: list[ImageRecord], input_format: str) -> DetectionDataset:
    return DetectionDataset(records, TrainTransform(tuple(cfg.train_min_size), cfg.train_max_size,
                                                    cfg.flip_prob, input_format, cfg.augment))


def eval_dataset(cfg: DataConfig, records: list[ImageRecord], input_format: str) -> DetectionDataset:
    return DetectionDataset(records, EvalTransform(cfg.test_min_size, cfg.test_max_size, input_format))
