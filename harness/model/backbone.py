"""Backbones returning C3, C4, C5 (strides 8, 16, 32): torchvision ResNets and a tiny CPU net.

Weights come from a local file only: a torchvision ``.pth`` state dict, or an MSRA / detectron2
``.pkl`` (caffe2 names like ``res2_0_branch2a_w`` or detectron2 names like
``res2.0.conv1.weight``) converted on load, unpickled with an allow-list that cannot run code.
MSRA weights put the stride of a bottleneck in its first 1x1 conv (detectron2 STRIDE_IN_1X1).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnext101_32x8d": torchvision.models.resnext101_32x8d,
    "resnext101_64x4d": torchvision.models.resnext101_64x4d,
}


class WeightsError(ValueError):
    pass


def _nbytes(shape, dtype, limit: int) -> None:
    """Refuse an array the file could not hold: its size is checked before numpy allocates it."""
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise WeightsError(f"an array with shape {str(shape)[:40]} (not a tuple of sizes)")
    try:
        dt = np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
    except (TypeError, ValueError):
        raise WeightsError(f"an array of unknown dtype {str(dtype)[:40]}") from None
    if dt.hasobject:
        raise WeightsError("an array of Python objects (only numeric arrays are allowed)")
    n = dt.itemsize
    for d in shape:
        n *= d
        if n > limit:
            break
    if n > limit:
        raise WeightsError(f"an array with shape {shape} of {dt} needs more bytes than the file's {limit:,}")


class _NumpyOnly(pickle.Unpickler):
    """Unpickles numpy arrays only; every array's size is checked against the file's before
    numpy allocates it (a 40-byte pickle can otherwise ask for a terabyte)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def __init__(self, file, *, limit: int, **kwargs):
        super().__init__(file, **kwargs)
        self.limit = limit

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise WeightsError(f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)")
        found = super().find_class(module, name)
        limit = self.limit
        if name == "_reconstruct":
            def reconstruct(subtype, shape, dtype):
                _nbytes(shape, dtype, limit)
                arr = found(_CheckedArray, shape, dtype)
                arr.limit = limit
                return arr
            return reconstruct
        if name == "ndarray":
            return _CheckedArray
        return found


class _CheckedArray(np.ndarray):
    """An ndarray whose pickled state (shape, dtype, data) is checked before it is applied."""

    limit = 0  # set on each instance by _NumpyOnly

    def __new__(cls, *args, **kwargs):  # a pickle calling ndarray(shape) directly: never in numpy's own
        raise WeightsError("an array built by calling ndarray() (only numpy's own pickles are allowed)")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise WeightsError("an array with a malformed pickled state")
        _nbytes(state[-4], state[-3], self.limit)
        super().__setstate__(state)


def _caffe2_to_torchvision(name: str) -> str | None:
    m = re.fullmatch(r"res(\d)_(\d+)_branch(1|2[abc])_(w|bn_s|bn_b)", name)
    if m:
        stage, block, branch, kind = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        prefix = f"layer{stage - 1}.{block}."
        if branch == "1":
            mod = "downsample.0" if kind == "w" else "downsample.1"
        else:
            k = "abc".index(branch[1]) + 1
            mod = f"conv{k}" if kind == "w" else f"bn{k}"
        suffix = {"w": "weight", "bn_s": "weight", "bn_b": "bias"}[kind]
        return prefix + mod + "." + suffix
    return {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias"}.get(name)


def _detectron2_to_torchvision(name: str) -> str | None:
    name = name.replace("backbone.bottom_up.", "")
    m = re.fullmatch(r"stem\.conv1\.(norm\.)?(weight|bias|running_mean|running_var)", name)
    if m:
        return ("bn1." if m.group(1) else "conv1.") + m.group(2)
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv[123]|shortcut)\.(norm\.)?(weight|bias|running_mean|running_var)", name)
    if m:
        stage, block, conv, norm, kind = m.groups()
        prefix = f"layer{int(stage) - 1}.{block}."
        if conv == "shortcut":
            return prefix + ("downsample.1." if norm else "downsample.0.") + kind
        k = conv[-1]
        return prefix + (f"bn{k}." if norm else f"conv{k}.") + kind
    return None


def load_weights_file(path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """State dict in torchvision names, and whether the weights are MSRA-style (caffe)."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"weights file not found: {path}")
    if p.suffix == ".pkl":
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = _NumpyOnly(f, encoding="latin1", limit=size).load()
        except WeightsError as exc:
            raise WeightsError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, RecursionError, OSError) as exc:
            raise WeightsError(f"{path}: unreadable weights file ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:120] if str(exc) else 'truncated?'})") from None
        blobs = data.get("model", data.get("blobs", data)) if isinstance(data, dict) else data
        if not isinstance(blobs, dict):
            raise WeightsError(f"{path}: not a mapping of names to arrays")
        out: dict[str, torch.Tensor] = {}
        for name, value in blobs.items():
            if not isinstance(value, np.ndarray):
                continue
            tv = _caffe2_to_torchvision(name) or _detectron2_to_torchvision(name)
            if tv is not None:
                out[tv] = torch.from_numpy(np.ascontiguousarray(value.view(np.ndarray)))
        if not out:
            raise WeightsError(f"no ResNet weights recognised in {path}")
        return out, True
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a foreign file
            warnings.simplefilter("ignore")
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or refused by weights_only
        raise WeightsError(f"{path}: unreadable weights file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state, False


class ResNetBackbone(nn.Module):
    out_strides = (8, 16, 32)

    def __init__(self, *, name: str, freeze_at: int = 2, norm: str = "frozen_bn", weights: str | None = None,
                 stride_in_1x1: bool | None = None):
        super().__init__()
        norm_layer = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}.get(norm)
        if norm_layer is None:
            raise ValueError(f"ResNet backbones support norm frozen_bn or bn, not {norm!r}")
        net = RESNETS[name](weights=None, norm_layer=norm_layer)
        state, caffe = load_weights_file(weights) if weights else ({}, False)
        if stride_in_1x1 if stride_in_1x1 is not None else caffe:
            for layer in (net.layer2, net.layer3, net.layer4):
                block = layer[0]
                if hasattr(block, "conv3") and block.conv2.stride == (2, 2):
                    block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
        if state:
            if caffe:  # caffe2 BN carries scale/bias only: make (running_var + eps) exactly 1
                for key in list(state):
                    if key.endswith(".weight") and key.replace(".weight", ".bias") in state:
                        mod = key.rsplit(".", 1)[0]
                        if mod.startswith("bn") or ".bn" in mod or mod.endswith("downsample.1"):
                            state.setdefault(mod + ".running_mean", torch.zeros_like(state[key]))
                            state.setdefault(mod + ".running_var", torch.ones_like(state[key]) - 1e-5)
            missing, _ = net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
            missing = [k for k in missing if not k.startswith("fc.") and "num_batches_tracked" not in k]
            if missing:
                raise WeightsError(f"weights file {weights} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_channels = tuple(s[-1].conv3.out_channels if hasattr(s[-1], "conv3") else s[-1].conv2.out_channels
                                  for s in self.stages[1:])
        modules = [self.stem, *self.stages]
        for mod in modules[:freeze_at]:
            for p in mod.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        return outs


class TinyBackbone(nn.Module):
    """A small conv net for CPU tests and the quickstart: C3..C5 with widths 4w, 8w, 16w."""

    out_strides = (8, 16, 32)

    def __init__(self, *, width: int = 16, norm: str = "gn"):
        super().__init__()

        def block(cin, cout, stride):
            groups = max(1, min(8, cout // 4))
            nrm = nn.GroupNorm(groups, cout) if norm == "gn" else nn.BatchNorm2d(cout)
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nrm, nn.ReLU(inplace=True))

        w = width
        self.stem = nn.Sequential(block(3, w, 2), block(w, 2 * w, 2))
        self.stages = nn.ModuleList([
            nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 1)),
            nn.Sequential(block(4 * w, 8 * w, 2), block(8 * w, 8 * w, 1)),
            nn.Sequential(block(8 * w, 16 * w, 2), block(16 * w, 16 * w, 1)),
        ])
        self.out_channels = (4 * w, 8 * w, 16 * w)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
