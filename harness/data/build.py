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
from harness.spec.schema import DataConfig, SplitConfig

expand_path = expand_vars


@dataclass
class Datasets:
    train: list[ImageRecord]
    val: list[ImageRecord]
    info: DatasetInfo  # of the val split


LOADERS = {"coco": load_coco, "crowdhuman": load_crowdhuman}


def _split(cfg: DataConfig, root: Path, split: SplitConfig, where: str, *, gt_filter: str):
    ann = Path(expand_path(split.annotations, f"{where}.annotations"))
    images = Path(expand_path(split.images, f"{where}.images"))
    ann = ann if ann.is_absolute() else root / ann
    images = images if images.is_absolute() else root / images
    if not ann.exists():
        raise DataError(Problem(str(ann), None, f"{where}.annotations", "annotation file not found"))
    return LOADERS[cfg.name](ann, images, gt_filter=gt_filter)


def _train_split(cfg: DataConfig, root: Path) -> list[ImageRecord]:
    """`data.train` and then each `data.train_extra` split, concatenated; an image id found in
    two files, or a COCO file whose categories differ from the first one's (the labels would
    mean other classes), is refused."""
    records, first = _split(cfg, root, cfg.train, "data.train", gt_filter=cfg.gt_filter)
    seen = {r.image_id: "data.train" for r in records}
    for i, split in enumerate(cfg.train_extra):
        where = f"data.train_extra[{i}]"
        more, info = _split(cfg, root, split, where, gt_filter=cfg.gt_filter)
        if info.label_to_category != first.label_to_category:
            raise DataError(Problem(info.annotation_file, None, where,
                                    f"its categories differ from data.train's ({first.annotation_file})"))
        clash = next((r.image_id for r in more if r.image_id in seen), None)
        if clash is not None:
            raise DataError(Problem(info.annotation_file, None, where,
                                    f"image id {clash!r} is also in {seen[clash]}: ids must be unique"))
        seen.update((r.image_id, where) for r in more)
        records += more
    return records


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
        templates = (cfg.root, *(p for s in (cfg.train, *cfg.train_extra, cfg.val) for p in (s.annotations, s.images)))
        try:
            root = Path(expand_path(cfg.root)) if cfg.root else Path(".")
            train = _train_split(cfg, root)
            val, info = _split(cfg, root, cfg.val, "data.val", gt_filter="positive")
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
    if cfg.resize == "letterbox":  # the square side is the transform's max_size
        sizes, max_size = (cfg.letterbox_size,), cfg.letterbox_size
    else:
        sizes, max_size = tuple(cfg.train_min_size), cfg.train_max_size
    return DetectionDataset(records, TrainTransform(sizes, max_size, cfg.flip_prob, input_format, cfg.augment,
                                                    cfg.resize))


def eval_dataset(cfg: DataConfig, records: list[ImageRecord], input_format: str) -> DetectionDataset:
    if cfg.resize == "letterbox":
        size, max_size = cfg.letterbox_size, cfg.letterbox_size
    else:
        size, max_size = cfg.test_min_size, cfg.test_max_size
    return DetectionDataset(records, EvalTransform(size, max_size, input_format, cfg.resize))
