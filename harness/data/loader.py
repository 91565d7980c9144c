"""Iteration-based loaders: deterministic order for a seed, per-sample randomness, sharding.

The training stream is an endless sequence of shuffled epochs. Its k-th element is
``(index, sample_seed)``: the image and the seed of its own random transform, both fixed by
(seed, k). Process `rank` of `world_size` takes the elements with ``k % world_size == rank``,
so an iteration of W processes with b images each sees exactly the images one process with
W * b images sees, whatever the number of data workers. Resuming at iteration i skips the
first i batches of the stream.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.data.records import ImageRecord
from harness.data.transforms import pad_batch
from harness.spec.errors import DataError, Problem


class DetectionDataset(Dataset):
    def __init__(self, records: list[ImageRecord], transform):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        rec = self.records[index]
        try:
            with Image.open(rec.file) as im:
                img = im.convert("RGB")
        except FileNotFoundError:
            raise DataError(Problem(rec.file, None, "", "missing image file")) from None
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(Problem(rec.file, None, "", f"unreadable image: {exc}")) from None
        orig_wh = img.size
        rng = np.random.default_rng(sample_seed)
        tensor, boxes, labels = self.transform(img, rec.boxes, rec.labels, rng)
        return {
            "image": tensor,
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": rec.image_id,
            "orig_size": orig_wh,  # (w, h)
            "input_size": (tensor.shape[1], tensor.shape[2]),  # (h, w)
            "placement": self.transform.placement(orig_wh),  # a letterbox's offset and scale, or None
        }


def sample_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class TrainingSampler(Sampler):
    """Endless shuffled stream of (index, sample_seed), sharded by rank, resumable."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def _stream(self) -> Iterator[tuple[int, int]]:
        k = 0
        for epoch in itertools.count():
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            for index in perm:
                if k % self.world_size == self.rank:
                    yield int(index), sample_seed(self.seed, k)
                k += 1

    def __iter__(self):
        return itertools.islice(self._stream(), self.start, None)


def collate(items: list[dict]) -> dict:
    return {
        "images": [it["image"] for it in items],
        "targets": [{"boxes": it["boxes"], "labels": it["labels"]} for it in items],
        "image_sizes": [it["input_size"] for it in items],
        "image_ids": [it["image_id"] for it in items],
        "orig_sizes": [it["orig_size"] for it in items],
        "placements": [it.get("placement") for it in items],
    }


class Collator:
    """Pads the batch to a multiple of `divisibility` (P6/P7 sizes then follow)."""

    def __init__(self, divisibility: int):
        self.divisibility = divisibility

    def __call__(self, items: list[dict]) -> dict:
        batch = collate(items)
        batch["images"] = pad_batch(batch["images"], self.divisibility)
        return batch


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # differs per worker and per loader
    np.random.seed(seed)
    random.seed(seed)


def _share_through_files() -> None:
    """Workers hand batches over through shared-memory files, not by passing one file descriptor
    per tensor over a socket (the default): that costs a connection per tensor, about 14 ms per
    batch of 8 images with their targets on a CPU machine (11 s of a 27 s quickstart cell)."""
    torch.multiprocessing.set_sharing_strategy("file_system")


def train_loader(dataset: DetectionDataset, batch_per_rank: int, seed: int, *, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0, num_workers: int = 0,
                 divisibility: int = 32) -> DataLoader:
    sampler = TrainingSampler(len(dataset), seed, rank, world_size, start=start_iter * batch_per_rank)
    gen = torch.Generator()
    gen.manual_seed(seed * 1000 + rank)
    if num_workers:
        _share_through_files()
    return DataLoader(dataset, batch_size=batch_per_rank, sampler=sampler, num_workers=num_workers,
                      collate_fn=Collator(divisibility), worker_init_fn=_worker_init, generator=gen,
                      persistent_workers=num_workers > 0, drop_last=True)


def eval_loader(dataset: DetectionDataset, *, batch_size: int = 1, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, divisibility: int = 32) -> DataLoader:
    """Every image once, in order; rank r takes images r, r + W, ..."""
    indices = list(range(rank, len(dataset), world_size))
    if num_workers:
        _share_through_files()
    return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, collate_fn=Collator(divisibility),
                      worker_init_fn=_worker_init)
