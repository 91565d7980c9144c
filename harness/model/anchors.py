"""Anchors, in one place: cvpods' square anchor per location (the Anchor row, ATSS's IoU) and
mmdet's RetinaNet anchors with their valid flags (DATE-R)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.model.points import Grid


def square_anchors(grid: Grid, scale: float) -> torch.Tensor:
    """One square anchor of side scale * stride centred at every location: [R, 4]."""
    half = grid.strides[:, None] * scale / 2
    return torch.cat([grid.points - half, grid.points + half], dim=-1)


def retina_anchors(grid: Grid, octave_base_scale: float, scales_per_octave: int, ratios: list[float]) -> torch.Tensor:
    """mmdet AnchorGenerator (center_offset 0): anchors centred at (j * s, i * s), [R * A, 4]."""
    scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
    ratios_t = torch.tensor(ratios)
    h_ratios = ratios_t.sqrt()
    w_ratios = 1 / h_ratios
    base = grid.strides[:, None]  # [R, 1]
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)[None] * base  # [R, A]
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)[None] * base
    centers = grid.points - grid.strides[:, None] * 0.5
    cx, cy = centers[:, :1], centers[:, 1:]
    anchors = torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)
    return anchors.reshape(-1, 4)


@dataclass(frozen=True)
class SquareAnchors:
    """cvpods' Anchor row: one square anchor (side scale x stride) per location; all valid."""

    scale: float
    per_location: int = 1

    def boxes(self, grid: Grid) -> torch.Tensor:
        return square_anchors(grid, self.scale)

    def valid(self, grid: Grid, image_size) -> torch.Tensor | None:
        return None


@dataclass(frozen=True)
class RetinaAnchors:
    """mmdet's RetinaNet anchors: scales_per_octave x len(ratios) per location."""

    octave_base_scale: float
    scales_per_octave: int
    ratios: tuple[float, ...]
    #: mmdet's valid flags: the locations beyond the image's own size padded to this multiple
    #: are invalid (no assignment, no loss); None: all valid.
    valid_pad: int | None = 32

    @property
    def per_location(self) -> int:
        return len(self.ratios) * self.scales_per_octave

    def boxes(self, grid: Grid) -> torch.Tensor:
        return retina_anchors(grid, self.octave_base_scale, self.scales_per_octave, list(self.ratios))

    def valid(self, grid: Grid, image_size) -> torch.Tensor | None:
        """[R * A] flags: per level, the locations within ceil(pad / stride) rows and columns, pad
        = the image's own size rounded up to `valid_pad`; None when every anchor is valid."""
        if self.valid_pad is None:
            return None
        d = self.valid_pad
        pad_h, pad_w = (-(-int(image_size[0]) // d) * d, -(-int(image_size[1]) // d) * d)
        flags = []
        for (h, w), s in zip(grid.sizes, grid.strides.unique_consecutive().tolist(), strict=True):
            s = int(s)
            rows = torch.arange(h, device=grid.points.device) < min(-(-pad_h // s), h)
            cols = torch.arange(w, device=grid.points.device) < min(-(-pad_w // s), w)
            flags.append((rows[:, None] & cols[None, :]).reshape(-1))
        return torch.cat(flags).repeat_interleave(self.per_location)
