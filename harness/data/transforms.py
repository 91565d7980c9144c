"""Transforms: shortest-side resize with a long-side cap or a square letterbox, flip, DETR-style
crop, normalisation.

Boxes (x1, y1, x2, y2, pixels) follow every transform; `to_original` maps predictions back to
the original image for evaluation (detectron2's ``detector_postprocess``: scale, then clip; a
letterboxed image's `Placement` is undone first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: Pixel statistics per input format (0-255 scale, in the channel order of the format).
PIXEL_STATS = {
    # MSRA / detectron2 caffe weights: BGR, mean subtracted, std 1
    "caffe_bgr": ((103.53, 116.28, 123.675), (1.0, 1.0, 1.0)),
    # torchvision weights: RGB ImageNet statistics
    "torchvision_rgb": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}

#: The letterbox's padding, RGB 0-255: the original's BGR (103, 116, 123), about the ImageNet
#: mean, so that padding normalises to about 0 (liangheming/fcosv1 `BoxInfo.padding_val`).
LETTERBOX_PAD = (123, 116, 103)

#: DETR's crop branch: resize to one of these, crop 384-600, then the usual resize.
DETR_CROP_RESIZE = (400, 500, 600)
DETR_CROP = (384, 600)


def resize_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) of resizing the shortest side to `short` with the long side capped."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short * 1.0, scale * w) if h < w else (scale * h, short * 1.0)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize(img: Image.Image, boxes: np.ndarray, short: int, max_size: int):
    w, h = img.size
    newh, neww = resize_shape(h, w, short, max_size)
    if (newh, neww) != (h, w):
        img = img.resize((neww, newh), Image.BILINEAR)
    scale = np.array([neww / w, newh / h, neww / w, newh / h], dtype=np.float32)
    return img, boxes * scale


@dataclass(frozen=True)
class Placement:
    """Where a letterboxed image sits in its input: input = original * scale + (left, top)."""

    scale: float
    left: int
    top: int


def letterbox_shape(h: int, w: int, size: int) -> tuple[int, int, Placement]:
    """(new h, new w, placement) of scaling the long side to `size` and centring the result in a
    size x size square; liangheming/fcosv1 `RandScaleToMax.make_border`: Python's round of the
    scaled sides, the odd pixel of padding at the bottom / right."""
    r = min(size / h, size / w)
    neww, newh = int(round(w * r)), int(round(h * r))
    left, top = int(round((size - neww) / 2 - 0.1)), int(round((size - newh) / 2 - 0.1))
    return newh, neww, Placement(r, left, top)


def resize_linear(img: Image.Image, neww: int, newh: int) -> Image.Image:
    """OpenCV's INTER_LINEAR (half-pixel centres, no antialiasing when shrinking), which the
    letterbox's original uses; PIL's BILINEAR antialiases a downscale."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy())[None]
    out = torch.nn.functional.interpolate(arr, size=(newh, neww), mode="bilinear", align_corners=False)
    out = out[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def letterbox(img: Image.Image, boxes: np.ndarray, size: int):
    """The long side to `size` (aspect ratio kept), the short side padded with `LETTERBOX_PAD`
    to a size x size image, the content centred; boxes * scale + (left, top), not clipped."""
    w, h = img.size
    newh, neww, p = letterbox_shape(h, w, size)
    img = img.convert("RGB")
    if p.scale != 1.0:
        img = resize_linear(img, neww, newh)
    out = Image.new("RGB", (size, size), LETTERBOX_PAD)
    out.paste(img, (p.left, p.top))
    shift = np.array([p.left, p.top, p.left, p.top], dtype=np.float64)
    return out, (boxes.astype(np.float64) * p.scale + shift).astype(np.float32)


def hflip(img: Image.Image, boxes: np.ndarray):
    w = img.size[0]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return img.transpose(Image.FLIP_LEFT_RIGHT), out


def random_crop(img: Image.Image, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                min_size: int, max_size: int):
    """DETR's RandomSizeCrop: a random window; boxes clipped to it, empty ones dropped."""
    w, h = img.size
    cw = int(rng.integers(min(min_size, w), min(w, max_size) + 1))
    ch = int(rng.integers(min(min_size, h), min(h, max_size) + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    out = boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, cw)
    out[:, 1::2] = out[:, 1::2].clip(0, ch)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return img, out[keep], labels[keep]


def to_tensor(img: Image.Image, input_format: str) -> torch.Tensor:
    """uint8 RGB image -> normalised float32 [3, H, W] in the weights' channel order."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    if input_format == "caffe_bgr":
        arr = arr[..., ::-1]
    mean, std = PIXEL_STATS[input_format]
    arr = (arr - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


@dataclass(frozen=True)
class TrainTransform:
    """Resize (`resize` shortest_edge: a shortest side from `sizes`, the long side capped at
    `max_size`; letterbox: a `max_size` square, `letterbox`), then flip."""

    sizes: tuple[int, ...]
    max_size: int
    flip_prob: float
    input_format: str
    augment: str = "standard"
    resize: str = "shortest_edge"

    def __call__(self, img: Image.Image, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        boxes = boxes.astype(np.float32).reshape(-1, 4)
        if self.augment == "detr" and rng.random() < 0.5:
            img, boxes = resize(img, boxes, int(rng.choice(DETR_CROP_RESIZE)), 10**9)
            img, boxes, labels = random_crop(img, boxes, labels, rng, *DETR_CROP)
        if self.resize == "letterbox":
            img, boxes = letterbox(img, boxes, self.max_size)
        else:
            img, boxes = resize(img, boxes, int(rng.choice(self.sizes)), self.max_size)
        if rng.random() < self.flip_prob:
            img, boxes = hflip(img, boxes)
        keep = (boxes[:, 2] - boxes[:, 0] > 1e-5) & (boxes[:, 3] - boxes[:, 1] > 1e-5)
        return to_tensor(img, self.input_format), boxes[keep], labels[keep]

    def placement(self, original_wh: tuple[int, int]) -> None:
        """Training predictions are never mapped back."""
        return None


@dataclass(frozen=True)
class EvalTransform:
    """The shortest side to `size`, the long side capped at `max_size`; or (`resize`
    letterbox) a `max_size` square."""

    size: int
    max_size: int
    input_format: str
    resize: str = "shortest_edge"

    def __call__(self, img: Image.Image, boxes: np.ndarray, labels: np.ndarray, rng=None):
        boxes = boxes.astype(np.float32).reshape(-1, 4)
        if self.resize == "letterbox":
            img, boxes = letterbox(img, boxes, self.max_size)
        else:
            img, boxes = resize(img, boxes, self.size, self.max_size)
        return to_tensor(img, self.input_format), boxes, labels

    def placement(self, original_wh: tuple[int, int]) -> Placement | None:
        """What `to_original` undoes besides the scale: a letterbox's `Placement`; None for the
        shortest-side resize (its per-axis scale follows from the input and original sizes)."""
        if self.resize != "letterbox":
            return None
        w, h = original_wh
        return letterbox_shape(h, w, self.max_size)[2]


def pad_batch(images: list[torch.Tensor], divisibility: int) -> torch.Tensor:
    """Stack [3, h, w] images into [B, 3, H, W], zero-padded bottom/right to a multiple."""
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    h = (h + divisibility - 1) // divisibility * divisibility
    w = (w + divisibility - 1) // divisibility * divisibility
    out = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out


def to_original(boxes: torch.Tensor, input_hw: tuple[int, int], original_wh: tuple[int, int],
                placement: Placement | None = None) -> torch.Tensor:
    """Boxes predicted on the resized image -> original pixels, clipped to the image (use
    `nonempty` afterwards to drop the boxes clipping left empty, as detector_postprocess does).
    With a letterbox's `placement`: (box - (left, top)) / scale (liangheming/fcosv1 eval.py),
    the input size unused."""
    out_w, out_h = original_wh
    if placement is not None:
        shift = boxes.new_tensor([placement.left, placement.top, placement.left, placement.top])
        out = (boxes - shift) / placement.scale
    else:
        in_h, in_w = input_hw
        scale = boxes.new_tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h])
        out = boxes * scale
    out[:, 0::2] = out[:, 0::2].clamp(0, out_w)
    out[:, 1::2] = out[:, 1::2].clamp(0, out_h)
    return out


def nonempty(boxes: torch.Tensor) -> torch.Tensor:
    """detectron2's Boxes.nonempty(): width > 0 and height > 0 -> [N] bool."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
