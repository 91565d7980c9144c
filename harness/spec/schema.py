"""The schema of a resolved cell config and of an experiment spec.

Every model is frozen and strict (``extra="forbid"``): an unknown or mistyped key is an error
naming its path. The values documented here are the ones the published tables used
(DeFCN's cvpods configs, DATE's mmdet configs); experiment files set them per row through axes.

Only ``seed``, ``model``, ``data``, ``train`` and ``eval`` are hashed into a cell's run key.
``tracking`` and ``resources`` describe where and how a cell runs, not what it computes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1

#: Fields added to the schema after run keys were first handed out, each with the value that
#: keeps the behaviour from before it existed (dotted path; `*` matches any key at that level).
#: At that value the field is left out of the hashed config, so every run finished before the
#: field existed keeps its run key; any other value makes a new key. A field whose default
#: changes what is trained must not be listed: it needs a new key (bump SCHEMA_VERSION).
#: Fields added up to 2026-11-24 (gt_filter, filter_score, box_roundtrip, valid_pad,
#: ctr_norm_min, topk_cap, drop_empty) came with SCHEMA_VERSION 1 and are hashed as usual.
KEYLESS_DEFAULTS: dict[str, Any] = {"train.channels_last": False, "model.backbone.pretrain": None,
                                    "data.val_images": None, "data.train_extra": [],
                                    "data.resize": "shortest_edge", "data.letterbox_size": None,
                                    "train.epochs": None, "train.lr_schedule": "step",
                                    "train.cosine_final": 0.1, "train.ema": None, "train.sync_bn": False,
                                    "model.backbone.stride_in_1x1": None, "eval.topk_by": "cls",
                                    "model.*.loss.iou_smooth": 0.0, "model.*.loss.normalizer": "mean_positives",
                                    "train.warmup_method": "linear", "train.bias_lr_factor": 1.0,
                                    "train.weight_decay_bias": None}

#: Sections of the resolved config that determine the result (hashed into the run key).
HASHED_SECTIONS = ("seed", "model", "data", "train", "eval")

#: FCOS scale ranges (inclusive) of P3..P7; the last upper bound stands for infinity.
FCOS_RANGES: list[tuple[float, float]] = [
    (-1.0, 64.0),
    (64.0, 128.0),
    (128.0, 256.0),
    (256.0, 512.0),
    (512.0, 1e8),
]


def _numeric(annotation) -> bool:
    """int or float (possibly optional or annotated), but not bool."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (int, float)


def _numeric_items(annotation) -> bool:
    """A list or tuple of numbers (possibly optional or annotated)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _numeric_items(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numeric_items(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, tuple) and any(_numeric(a) for a in typing.get_args(annotation) if a is not Ellipsis)


class Strict(BaseModel):
    #: inf and nan are never valid settings (and could not be hashed into a run key)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """YAML's true/false is not 1/0: `max_iter: true` is an error, not one iteration, and
        `steps: [true]` is not [1]. The error carries the field, so that it names the field and
        the file or override that set it (spec.load.pydantic_problems)."""
        if isinstance(data, dict):
            for name, f in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool) and _numeric(f.annotation):
                    raise PydanticCustomError("bool_number", "expected a number, got {value}",
                                              {"field": name, "value": str(value).lower()})
                if (isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value)
                        and _numeric_items(f.annotation)):
                    raise PydanticCustomError("bool_number", "expected numbers, got {value}",
                                              {"field": name, "value": str(list(value)).lower()})
        return data


#: A seed torch, numpy and Python's random all accept.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]


# ----------------------------------------------------------------------------- model


class PretrainConfig(Strict):
    """Detection pre-training of the tiny backbone, the stand-in for an ImageNet checkpoint.

    The tiny backbone has no published weights, and drawing its initial weights anew for every
    seed makes the one-to-one rows' results depend on that draw more than on anything else.
    With `pretrain` set, every cell starts from the same backbone: an FCOS detector trained on
    a synthetic dataset of its own (generator seed `data_seed`, disjoint from the cell's images)
    with the recipe below; its FPN and head are thrown away. Like a checkpoint it does not
    follow the cell's own recipe: only the backbone's architecture, the synthetic generator's
    scene settings and the training transforms come from the cell. It is trained once per
    workspace and cached (harness/train/pretrain.py, docs/schedules.md).
    """

    #: Seed of the synthetic generator for the pre-training images (the cell's own data uses
    #: `data.synthetic.seed`, 0 by default; a different seed gives different scenes).
    data_seed: Seed = 1
    num_images: int = Field(1000, ge=1)
    #: Seed of the pre-training run (initial weights and image order). Not the cell's seed:
    #: every seed of every row starts from the same weights, as with an ImageNet checkpoint.
    seed: Seed = 0
    #: The throw-away detector: a cvpods FPN of this width and GroupNorm towers.
    fpn_channels: int = Field(32, ge=1)
    head_convs: int = Field(2, ge=0)
    gn_groups: int = Field(8, ge=1)
    #: Its recipe (the quickstart's): iterations of `ims_per_batch` images, linear warm-up from
    #: 1e-3 x lr, the lr divided by 10 at each of `steps`.
    iters: int = Field(600, ge=1)
    ims_per_batch: int = Field(8, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    base_lr: float = Field(0.002, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    clip_grad_norm: float | None = Field(1.0, gt=0.0)
    warmup_iters: int = Field(200, ge=0)
    steps: list[int] = Field(default_factory=lambda: [480, 560])

    @model_validator(mode="after")
    def _recipe(self) -> PretrainConfig:
        if list(self.steps) != sorted(set(self.steps)) or (self.steps and self.steps[-1] >= self.iters):
            raise ValueError(f"steps must be increasing and below iters {self.iters}, got {self.steps}")
        if self.fpn_channels % self.gn_groups:
            raise ValueError(f"gn_groups {self.gn_groups} does not divide fpn_channels {self.fpn_channels}")
        return self


class BackboneConfig(Strict):
    name: Literal[
        "tiny", "resnet18", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d"
    ] = "resnet50"
    #: Local weights file: a torchvision ``.pth`` state dict or an MSRA/detectron2 ``.pkl``.
    #: Never downloaded. ``${VAR:-default}`` is expanded when the model is built.
    weights: str | None = None
    #: Pixel format the weights expect: caffe BGR 0-255 (MSRA) or torchvision RGB ImageNet.
    input_format: Literal["caffe_bgr", "torchvision_rgb"] = "caffe_bgr"
    #: 0 = nothing frozen, 1 = stem, 2 = stem + res2 (the cvpods default), ...
    freeze_at: int = Field(2, ge=0, le=5)
    norm: Literal["frozen_bn", "bn", "gn"] = "frozen_bn"
    #: Where a downsampling bottleneck strides: true in its first 1x1 conv (MSRA's Caffe2 ResNets,
    #: maskrcnn-benchmark's STRIDE_IN_1X1 True), false in its 3x3 conv (torchvision; FAIR's
    #: ResNeXt pkl files, STRIDE_IN_1X1 False in the official FCOS's X-101 configs); null: true
    #: for a Caffe2 / detectron2 `.pkl`, false otherwise (the rule before this key existed).
    stride_in_1x1: bool | None = None
    #: Width of the tiny CPU backbone (ignored by the ResNets).
    tiny_width: int = Field(16, ge=4)
    #: Start the tiny backbone from a shared pre-training run instead of a fresh draw per seed.
    pretrain: PretrainConfig | None = None

    @model_validator(mode="after")
    def _resnet_norm(self) -> BackboneConfig:
        if self.name != "tiny" and self.norm == "gn":
            raise ValueError(f"norm: {self.name} supports frozen_bn or bn, not gn (gn is for the tiny backbone)")
        if self.pretrain is not None and (self.name != "tiny" or self.weights):
            raise ValueError("pretrain: only for the tiny backbone without a weights file (a ResNet "
                             "starts from its weights file; set model.backbone.pretrain to null)")
        return self


class FPNConfig(Strict):
    #: cvpods: P6 = conv3x3/2 on P5 output, P7 on ReLU(P6), c2-xavier init.
    #: mmdet: same topology (extra convs on the output, ReLU before the second), xavier init.
    name: Literal["cvpods", "mmdet"] = "cvpods"
    channels: int = Field(256, ge=1)


class HeadConfig(Strict):
    """The shared towers; predictors (branches) put their output convs on top."""

    num_convs: int = Field(4, ge=0)
    norm: Literal["gn", "none"] = "gn"
    gn_groups: int = Field(32, ge=1)
    prior_prob: float = Field(0.01, gt=0.0, lt=1.0)


class FCOSAssigner(Strict):
    name: Literal["fcos"] = "fcos"
    #: Center-sampling radius in strides (clipped to the box); null = whole box.
    center_radius: float | None = 1.5
    scale_ranges: list[tuple[float, float]] = Field(default_factory=lambda: list(FCOS_RANGES))


class ATSSAssigner(Strict):
    name: Literal["atss"] = "atss"
    topk: int = Field(9, ge=1)
    #: Side of the square "anchor" at a location, in strides.
    anchor_scale: float = 8.0


class AnchorAssigner(Strict):
    """One best-IoU square anchor (side anchor_scale * stride) per GT over all levels."""

    name: Literal["anchor"] = "anchor"
    anchor_scale: float = 4.0


class CenterAssigner(Strict):
    name: Literal["center"] = "center"
    scale_ranges: list[tuple[float, float]] = Field(default_factory=lambda: list(FCOS_RANGES))


class FgLossAssigner(Strict):
    """Hungarian matching on the foreground loss (focal over all classes + w * GIoU)."""

    name: Literal["fg_loss"] = "fg_loss"
    center_radius: float = 1.5
    giou_weight: float = 2.0
    outside_cost: float = 1e8


class POTOAssigner(Strict):
    """Prediction-aware one-to-one: quality p^(1-alpha) * IoU^alpha, maximised by Hungarian."""

    name: Literal["poto"] = "poto"
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    #: center: clipped center box of radius center_radius strides (COCO); box: inside the GT.
    prior: Literal["center", "box"] = "center"
    center_radius: float = 1.5
    #: Quality outside the prior: -1 in DeFCN, 0 in DATE.
    outside_value: float = -1.0
    #: keep: a GT with an empty prior still takes a location (reference); drop: it takes none.
    empty_prior: Literal["keep", "drop"] = "keep"
    #: restricted: the exactly equivalent solve on prior columns + G dummies; full: all R columns.
    solver: Literal["restricted", "full"] = "restricted"
    #: DATE (mmdet): the predicted boxes reach the IoU through normalised (cx, cy, w, h) and back.
    box_roundtrip: bool = False


class POTOArgmaxAssigner(Strict):
    """POTO quality, but each GT takes its argmax location (no Hungarian)."""

    name: Literal["poto_argmax"] = "poto_argmax"
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    prior: Literal["center", "box"] = "center"
    center_radius: float = 1.5
    outside_value: float = -1.0


class DETRHungarianAssigner(Strict):
    """mmdet HungarianAssigner (DATE's CrowdHuman rows): focal + L1(cxcywh) + GIoU costs."""

    name: Literal["detr_hungarian"] = "detr_hungarian"
    cls_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0


class MaxIoUAssigner(Strict):
    """RetinaNet anchors: positive IoU >= pos_iou, negative < neg_iou, ignored in between."""

    name: Literal["max_iou"] = "max_iou"
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    min_pos_iou: float = 0.0


Assigner = Annotated[
    FCOSAssigner
    | ATSSAssigner
    | AnchorAssigner
    | CenterAssigner
    | FgLossAssigner
    | POTOAssigner
    | POTOArgmaxAssigner
    | DETRHungarianAssigner
    | MaxIoUAssigner,
    Field(discriminator="name"),
]


class AnchorGenConfig(Strict):
    """RetinaNet anchor generator (octave_base 4, 3 scales per octave, ratios 0.5/1/2)."""

    octave_base_scale: float = 4.0
    scales_per_octave: int = Field(3, ge=1)
    ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    #: mmdet's anchor valid flags: an anchor whose location lies beyond the image's own size,
    #: padded to a multiple of this (mmdet's Pad size_divisor), is left out of the assignment
    #: and of the loss; null: every anchor of the padded batch counts.
    valid_pad: int | None = Field(32, ge=1)


class LossConfig(Strict):
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    #: Floor of the centerness-weighted box loss's normaliser (the sum of the positives'
    #: centerness targets, averaged over processes): 1.0 in cvpods' FCOS, 1e-6 in mmdet's.
    ctr_norm_min: float = Field(1.0, gt=0.0)
    cls_weight: float = Field(1.0, ge=0.0)
    #: giou: 1 - GIoU; neg_log_iou: -log IoU (DATE-F); l1_delta: L1 on anchor deltas (DATE-R).
    box: Literal["giou", "neg_log_iou", "l1_delta"] = "giou"
    box_weight: float = Field(1.0, ge=0.0)
    #: neg_log_iou only: -log((I + s) / (U + s)) with s = iou_smooth (the official FCOS's
    #: IOULoss, maskrcnn-benchmark: 1.0); 0: -log(max(I / U, 1e-6)) (mmdet).
    iou_smooth: float = Field(0.0, ge=0.0)
    #: mean_positives: cls and centerness / max(1, positives averaged over processes), the
    #: centerness-weighted box loss / the targets' sum averaged over processes (cvpods, mmdet);
    #: per_process_plus_images (the official FCOS, maskrcnn-benchmark): on each process, cls /
    #: (its positives + its images), centerness / max(1, its positives), box / its targets' sum.
    normalizer: Literal["mean_positives", "per_process_plus_images"] = "mean_positives"
    #: centerness: box loss weighted per positive by its centerness target, / sum of targets.
    box_weighting: Literal["none", "centerness"] = "none"
    #: L1 on (cx, cy, w, h) normalised by the image size (DATE one-to-one), 0 = off.
    l1_weight: float = Field(0.0, ge=0.0)
    ctr_weight: float = Field(1.0, ge=0.0)


class PredictorConfig(Strict):
    """One set of output convs on the shared towers, with its assignment and losses."""

    assigner: Assigner
    #: ltrb_relu: ReLU(scale*conv)*stride; ltrb_clamp: clamp(scale*conv, 0)*stride (DATE o2o);
    #: ltrb_exp: exp(scale*conv) pixels (mmdet FCOS, norm_on_bbox False); anchor_delta: deltas.
    box_coder: Literal["ltrb_relu", "ltrb_clamp", "ltrb_exp", "anchor_delta"] = "ltrb_relu"
    #: Which tower carries the centerness branch (FCOS/ATSS); none = no centerness.
    centerness: Literal["none", "reg", "cls"] = "none"
    #: 3DMF on the reg tower; score = sigmoid(cls) * sigmoid(filter).
    filter: Literal["none", "3dmf", "3dmf_wo_gn"] = "none"
    filter_kernel: int = Field(3, ge=1)
    filter_tau: int = Field(2, ge=0)
    #: How the 3DMF score trains. product (DeFCN): focal loss on p = sigmoid(cls) * sigmoid(filter);
    #: logit (DATE): the cls logit becomes inverse_sigmoid(p, eps=1e-5) (p clamped to
    #: [1e-5, 1 - 1e-5]) for the loss, the assignment and inference.
    filter_score: Literal["product", "logit"] = "product"
    #: Learnable per-level scale on the regression output.
    scales: bool = True
    anchors: AnchorGenConfig | None = None
    loss: LossConfig = LossConfig()

    @model_validator(mode="after")
    def _anchor_rules(self) -> PredictorConfig:
        if self.box_coder == "anchor_delta" and self.assigner.name not in ("anchor", "max_iou"):
            raise ValueError("box_coder 'anchor_delta' needs an anchor-based assigner")
        if self.assigner.name == "max_iou" and self.anchors is None:
            raise ValueError("assigner 'max_iou' needs an 'anchors' section")
        return self


class AuxConfig(Strict):
    """DeFCN's auxiliary one-to-many focal loss on the unfiltered cls logits (no box loss)."""

    topk: int = Field(9, ge=1)
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    weight: float = Field(1.0, ge=0.0)


class ModelConfig(Strict):
    num_classes: int = Field(ge=1)
    backbone: BackboneConfig = BackboneConfig()
    fpn: FPNConfig = FPNConfig()
    head: HeadConfig = HeadConfig()
    #: The predictor used at inference.
    predictor: PredictorConfig
    #: DeFCN's auxiliary loss (POTO + 3DMF + Aux rows).
    aux: AuxConfig | None = None
    #: DATE's one-to-many predictor sharing towers and scales; trained, never used at inference.
    o2m: PredictorConfig | None = None


# ------------------------------------------------------------------------------ data


class SplitConfig(Strict):
    #: Image folder and annotation file, relative to data.root unless absolute.
    images: str
    annotations: str


class SynthConfig(Strict):
    num_train: int = Field(200, ge=1)
    num_val: int = Field(50, ge=1)
    min_size: int = Field(128, ge=32)
    max_size: int = Field(320, ge=32)
    crowd: Literal["none", "low", "high"] = "high"
    format: Literal["coco", "odgt"] = "coco"
    ignore_regions: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _sizes(self) -> SynthConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        return self


class DataConfig(Strict):
    name: Literal["coco", "crowdhuman", "synthetic"]
    #: Dataset root; ``${VAR:-default}`` is expanded when the data is built, so the hashed
    #: config (and the run key) does not depend on one machine's paths.
    root: str = ""
    train: SplitConfig | None = None
    #: More training splits, loaded like `train` and appended to it in this order (the official
    #: FCOS trains on COCO 2014 train + valminusminival: maskrcnn-benchmark's paths_catalog
    #: `coco_2014_train` + `coco_2014_valminusminival`). Image ids must be unique over all the
    #: files and every COCO file must list the same categories. Not for the synthetic dataset.
    train_extra: list[SplitConfig] = Field(default_factory=list)
    val: SplitConfig | None = None
    synthetic: SynthConfig | None = None
    #: How images are sized, for training and evaluation alike. shortest_edge: the shortest
    #: side to one of `train_min_size` (`test_min_size`), the long side capped at
    #: `train_max_size` (`test_max_size`). letterbox (the unofficial FCOS of liangheming/fcosv1,
    #: `RandScaleToMax` in utils/augmentations.py): the long side scaled to `letterbox_size`
    #: keeping the aspect ratio, the short side padded (centred, mean colour) to a square
    #: `letterbox_size` x `letterbox_size`; the min/max sizes are then unused (docs/fcos.md).
    resize: Literal["shortest_edge", "letterbox"] = "shortest_edge"
    #: The square side of `resize: letterbox` (the original's `max_thresh`, 640); only with it.
    letterbox_size: int | None = Field(None, ge=32)
    #: Shortest-side sizes for training (one chosen per image when several) and the long cap.
    train_min_size: list[int] = Field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    train_max_size: int = 1333
    test_min_size: int = 800
    test_max_size: int = 1333
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    #: standard: resize + flip; detr: DATE's DETR-style resize / crop augmentation.
    augment: Literal["standard", "detr"] = "standard"
    size_divisibility: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0)
    #: Drop images without (non-ignored) boxes from training.
    filter_empty: bool = True
    #: Which training GT boxes are kept: positive (detectron2/cvpods: w, h > 0) or mmdet
    #: (DATE's mmdet 2.25 loader: boxes with w < 1, h < 1, area <= 0 or outside the image
    #: are dropped). The val split (or `val_images` of it) is always scored with every GT box.
    gt_filter: Literal["positive", "mmdet"] = "positive"
    #: A declared subset of the val split, [start, stop): the images at positions start..stop-1
    #: (COCO: image ids in ascending order; CrowdHuman: odgt line order; synthetic: the
    #: generator's image index; only those are generated). Evaluation predicts and scores only
    #: these images, against the GT cut to them; training is unchanged. null: the whole split.
    #: A sweep scores its trials on one subset and confirms on another, disjoint one.
    val_images: tuple[int, int] | None = None

    @field_validator("val_images", mode="before")
    @classmethod
    def _two_numbers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) != 2:
            raise ValueError(f"expected [start, stop], got {list(value)}")
        return value

    @field_validator("val_images")
    @classmethod
    def _val_range(cls, value: tuple[int, int] | None, info: ValidationInfo) -> tuple[int, int] | None:
        if value is None:
            return value
        start, stop = value
        if not 0 <= start < stop:
            raise ValueError(f"[{start}, {stop}] is no range of images: needs 0 <= start < stop")
        synth = info.data.get("synthetic")
        if info.data.get("name") == "synthetic" and synth is not None and stop > synth.num_val:
            raise ValueError(f"[{start}, {stop}] ends after the synthetic val split "
                             f"(data.synthetic.num_val {synth.num_val})")
        return value

    @model_validator(mode="after")
    def _sources(self) -> DataConfig:
        if self.name == "synthetic":
            if self.synthetic is None:
                raise ValueError("data.name 'synthetic' needs a 'synthetic' section")
        elif self.train is None or self.val is None:
            raise ValueError(f"data.name '{self.name}' needs 'train' and 'val' sections")
        if not self.train_min_size:
            raise ValueError("train_min_size must list at least one size")
        if self.train_extra and self.name == "synthetic":
            raise ValueError("train_extra needs files: the synthetic dataset has one train split")
        if self.resize == "letterbox" and self.letterbox_size is None:
            raise ValueError("resize 'letterbox' needs letterbox_size (the square side, e.g. 640)")
        if self.resize != "letterbox" and self.letterbox_size is not None:
            raise ValueError(f"letterbox_size is only used with resize 'letterbox', not '{self.resize}'")
        return self


# ------------------------------------------------------------------------------ train


class HealthConfig(Strict):
    """Training health: the rules that end a diverged run FAILED ("diverged: ..."), exit 4.

    A non-finite loss is always divergence (exit 3), whatever this section says. Iterations
    and fractions refer to the run's schedule (after the linear scaling rule). The defaults
    were measured on the SGD quickstart recipe (280 iterations; 7 healthy runs in
    tests/train/data/quickstart_loss_histories.json, replayed by tests/train/test_health.py):
    healthy runs stay far from them, FCOS with `train.base_lr=3.0` is flagged at iteration 35.
    """

    #: false = neither rule below ever flags (a non-finite loss still fails the run).
    enabled: bool = True
    #: Loss-ratio rule: the total loss is smoothed by an exponential moving average
    #: (ema_t = ema * ema_{t-1} + (1 - ema) * loss_t, starting at the first loss). 0.98 averages
    #: about 50 iterations: one bad batch (POTO in the quickstart has single batches at 6x its
    #: running loss right after warm-up) moves it by 2 % of its excess, while a loss that stays
    #: 18x higher crosses 4x within about 10 iterations. With 0.9 a healthy POTO+3DMF run
    #: reached 3.9x its minimum; with 0.98 healthy quickstart runs stay below 1.5x.
    ema: float = Field(0.98, ge=0.0, lt=1.0)
    #: ... flagged when the EMA stays above `loss_ratio` x its running minimum for `window`
    #: consecutive iterations. 4 is far above what healthy runs do: a one-to-one assigner's loss
    #: rises after warm-up while positives start being learned (POTO: 1.3 -> 2.4 per batch,
    #: 1.3-1.5x in the EMA), COCO schedules spike mildly and only fall at their lr steps; an
    #: explosion (1.4 -> 25) is 18x.
    loss_ratio: float = Field(4.0, gt=1.0)
    #: A spike shorter than this (a few bad batches) is not divergence; an explosion that stays
    #: is flagged `window` iterations after the EMA crosses the line.
    window: int = Field(20, ge=1)
    #: First iteration whose EMA enters the running minimum (and so can be flagged). 0: from
    #: the first iteration, so that an explosion during warm-up (a too large base_lr blows up
    #: as the warm-up ramps the lr: at iteration 6 of a 50-iteration quickstart warm-up) is
    #: caught too;
    #: starting after warm-up would take the exploded loss as the minimum. The early rise
    #: described above stays well within 4x. A run whose first iterations have an
    #: unrepresentatively low loss can raise it.
    min_iter: int = Field(0, ge=0)
    #: Zero-detections rule: an evaluation at iteration >= max(warmup_iters, dets_after x
    #: max_iter, dets_min_iter) whose headline postprocess (eval.nms) returns no detection at
    #: all on the whole val set is divergence. Earlier, a healthy model may still score
    #: everything below eval.score_thresh (an untrained head scores ~model.head.prior_prob =
    #: 0.01 < 0.05): healthy quickstart POTO runs had 0 detections at iteration 70 of 280 and,
    #: on other synthetic data, at 140; all had detections from 210 on. Hence 3/4 of the
    #: schedule, and never before iteration 200 (short test runs of a few dozen iterations end
    #: with no detection and are not diverged, just short). null = this rule is off.
    dets_after: float | None = Field(0.75, ge=0.0, le=1.0)
    dets_min_iter: int = Field(200, ge=0)
    #: No-useful-detections rule, from the same iteration: an evaluation whose headline AP
    #: (COCO `ap`, CrowdHuman `ap50`, as a fraction) is below `min_ap` is divergence too. It
    #: catches the run that blew up into a flat loss while still emitting detections (FCOS at
    #: base_lr 3.0 with AdamW + clipping: loss flat at 2.05, 40,000 detections, AP50 0.0). A
    #: learning model is far above 0.1 % by 3/4 of its schedule (quickstart rows: 73-84 % AP50;
    #: the old SGD quickstart's weakest row: 3.4 %). null = this rule is off.
    min_ap: float | None = Field(0.001, ge=0.0, le=1.0)


class EMAConfig(Strict):
    """An exponential moving average of the model's weights (the unofficial FCOS's `ModelEMA`,
    after YOLOv5 / timm): after every optimizer step each floating-point entry of the state dict
    (parameters and norm buffers) becomes v = d v + (1 - d) w with
    d = decay x (1 - exp(-updates / ramp)), updates counting the steps from 1. Integer buffers
    keep the value they had when the copy was made. The averaged weights are evaluated and
    checkpointed (docs/schedules.md)."""

    #: The decay the ramp approaches.
    decay: float = Field(0.9999, gt=0.0, lt=1.0)
    #: Steps over which the decay ramps up: d reaches 63 % of `decay` after `ramp` updates.
    ramp: float = Field(2000.0, gt=0.0)


class TrainConfig(Strict):
    #: The length in iterations; exactly one of max_iter and epochs is set.
    max_iter: int | None = Field(None, ge=1)
    #: The length in epochs of the training set (after data.filter_empty): max_iter becomes
    #: epochs x ceil(training images / ims_per_batch), once the data is loaded, and `steps`
    #: count epochs (docs/schedules.md).
    epochs: int | None = Field(None, ge=1)
    #: Total images per iteration over all processes.
    ims_per_batch: int = Field(16, ge=1)
    #: Batch the schedule was written for; with scale_rule linear, lr and iterations follow
    #: ims_per_batch / reference_batch (the run records what it did).
    reference_batch: int = Field(16, ge=1)
    scale_rule: Literal["linear", "none"] = "linear"
    #: sgd (cvpods), adamw (mmdet, DATE), adam (torch Adam with L2 weight decay on the weights
    #: of non-norm layers only, the unofficial FCOS's split_optimizer).
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    base_lr: float = Field(gt=0.0)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    backbone_lr_mult: float = 1.0
    clip_grad_norm: float | None = None
    #: step: x gamma at each step (detectron2's WarmupMultiStepLR); cosine: the unofficial
    #: FCOS's warm-up + cosine decay in each interval between steps (docs/schedules.md).
    lr_schedule: Literal["step", "cosine"] = "step"
    #: cosine: the fraction of an interval's starting lr its cosine ends at.
    cosine_final: float = Field(0.1, ge=0.0, le=1.0)
    steps: list[int] = Field(default_factory=list)
    gamma: float = 0.1
    warmup_iters: int = Field(1000, ge=0)
    warmup_factor: float = 1e-3
    #: linear: from warmup_factor up to 1 over warmup_iters (detectron2); constant: warmup_factor
    #: throughout, then 1 (maskrcnn-benchmark's WARMUP_METHOD "constant", the official FCOS).
    warmup_method: Literal["linear", "constant"] = "linear"
    #: Parameters named `bias`: lr x bias_lr_factor and weight decay weight_decay_bias (null: the
    #: rule of their layer, as before). The official FCOS (maskrcnn-benchmark): 2 and 0.
    bias_lr_factor: float = Field(1.0, gt=0.0)
    weight_decay_bias: float | None = Field(None, ge=0.0)
    checkpoint_period: int = Field(5000, ge=1)
    amp: bool = False
    #: Keep activations and conv weights in channels-last (NHWC) memory. The same arithmetic in
    #: another order: results change in the last bits, not in expectation. On the CPU the tiny
    #: quickstart convs train about 10 % faster this way.
    channels_last: bool = False
    #: Average the weights (see EMAConfig); the average is evaluated and checkpointed.
    ema: EMAConfig | None = None
    #: Under DDP (more than one process) BatchNorm layers become SyncBatchNorm; one process
    #: trains plain BatchNorm either way.
    sync_bn: bool = False
    #: When a run counts as diverged (see HealthConfig). Not part of the run key: the rules
    #: never change what is trained (harness/spec/matrix.py hashed_config).
    health: HealthConfig = HealthConfig()

    @model_validator(mode="after")
    def _steps(self) -> TrainConfig:
        if (self.max_iter is None) == (self.epochs is None):
            raise ValueError("set exactly one of max_iter and epochs (the other null), got "
                             f"max_iter {self.max_iter} and epochs {self.epochs}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps must be increasing, got {self.steps}")
        length, unit = (self.max_iter, "max_iter") if self.epochs is None else (self.epochs, "epochs")
        # cosine: a last step at the end is allowed (the original's milestones [18, 24] of 24 epochs)
        if self.steps and (self.steps[-1] > length or self.steps[-1] == length and self.lr_schedule == "step"):
            raise ValueError(f"step {self.steps[-1]} is not below {unit} {length}")
        return self


# ------------------------------------------------------------------------------- eval


#: eval.metrics -> the metrics its evaluator reports, as fractions: COCO's 12 numbers of
#: COCOeval.summarize in their order, CrowdHuman's AP50, mMR and recall. The spec checks the
#: metrics a table or claim names against them, so they are written here, below every other
#: layer; harness/evaluation/kinds.py says the rest of each evaluator (its headline metric,
#: detections file and scoring).
EVALUATOR_METRICS: dict[str, tuple[str, ...]] = {
    "coco": ("ap", "ap50", "ap75", "aps", "apm", "apl", "ar1", "ar10", "ar100", "ars", "arm", "arl"),
    "crowdhuman": ("ap50", "mmr", "recall"),
}


def headline_mode(nms: bool) -> Literal["nms", "nms_free"]:
    """The name of the postprocess `eval.nms` makes the headline: `nms` or `nms_free`, as in
    the logged `eval.<mode>.<metric>`."""
    return "nms" if nms else "nms_free"


class EvalConfig(Strict):
    #: Evaluate every `period` iterations (0 = only at the end).
    period: int = Field(0, ge=0)
    #: The row's headline postprocess; the other one is always computed too.
    nms: bool
    nms_thresh: float = Field(0.6, gt=0.0, le=1.0)
    score_thresh: float = Field(0.05, ge=0.0, lt=1.0)
    topk_per_level: int = Field(1000, ge=1)
    #: locations (cvpods): a level keeps min(topk_per_level, its H x W) candidates, although
    #: its scores are flattened over H x W x classes; candidates (mmdet): topk_per_level.
    topk_cap: Literal["locations", "candidates"] = "locations"
    #: What the per-level top-k ranks (after the threshold on the class score): cls, the class
    #: score (cvpods, mmdet); cls_ctr, class score x centerness (the official FCOS's
    #: FCOSPostProcessor; the same as cls without a centerness branch).
    topk_by: Literal["cls", "cls_ctr"] = "cls"
    max_dets: int = Field(100, ge=1)
    #: Drop detections that are empty (zero width or height) once mapped back to the original
    #: image and clipped (detectron2/cvpods' detector_postprocess); mmdet keeps them.
    drop_empty: bool = True
    metrics: Literal["coco", "crowdhuman"] = "coco"
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools"

    @property
    def headline(self) -> Literal["nms", "nms_free"]:
        """The headline postprocess by name (`eval.nms`). A property: it is not in the config's
        dump, so it never enters a run key."""
        return headline_mode(self.nms)


# ------------------------------------------------------------------ tracking/resources


class TrackingConfig(Strict):
    log_period: int = Field(20, ge=1)
    #: Upload the final checkpoint as an MLflow artifact (large).
    log_checkpoint: bool = False
    system_metrics: Literal["auto", "on", "off"] = "auto"


class SlurmConfig(Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_min: int = Field(60 * 24, ge=1)
    cpus_per_gpu: int = Field(8, ge=1)
    #: CPUs of a cell that asks for no GPU.
    cpus: int = Field(4, ge=1)
    mem_gb: int = Field(64, ge=1)
    array_parallelism: int = Field(64, ge=1)


class ResourcesConfig(Strict):
    gpus: int = Field(1, ge=0)
    max_attempts: int = Field(2, ge=1)
    slurm: SlurmConfig = SlurmConfig()


# ------------------------------------------------------------------------- the config


class Config(Strict):
    """The fully resolved configuration of one cell."""

    seed: Seed = 0
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    tracking: TrackingConfig = TrackingConfig()
    resources: ResourcesConfig = ResourcesConfig()


# --------------------------------------------------------------------------- the spec

#: Every metric name a table or claim may use: the evaluators' metrics, each once.
METRICS = tuple(dict.fromkeys(m for names in EVALUATOR_METRICS.values() for m in names))
#: A paper's numbers a row may give besides its metrics (`Row.paper`): the FCOS README's training
#: memory (GB, summed over GPUs), test time per image (ms) and COCO test-dev AP (percent).
PAPER_ONLY = ("train_mem_gb", "test_ms_per_image", "testdev_ap")


class Row(Strict):
    """A named table row: the axis values it picks, extra overrides and display metadata."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
    #: Axis name -> value name (written as plain keys of the row in YAML).
    picks: dict[str, str] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    table: str | None = None
    #: Display text of the "model" column (defaults to the label).
    model: str | None = None
    assignment: str = ""
    #: Display text of the "with NMS" column (defaults to the cell's eval.nms).
    with_nms: str | None = None
    lr_sched: str = ""
    #: Display text of the "Multi-scale training" column (defaults to Yes when the cell's
    #: data.train_min_size lists several sizes, else No).
    multi_scale: str | None = None
    note: str = ""
    baseline: bool = False
    #: Compare with this row instead of the table's baseline (e.g. an ablation of a row
    #: that lives in another table).
    compare_to: str | None = None
    #: The paper's published numbers for this row, in percent, by metric name (and in GB, ms
    #: and percent for `PAPER_ONLY`'s train_mem_gb, test_ms_per_image and testdev_ap).
    paper: dict[Literal[METRICS + PAPER_ONLY], float] = Field(default_factory=dict)  # type: ignore[valid-type]


class Claim(Strict):
    """One comparison a table declares: `row` (with its postprocessing `post`) against `vs`
    (with `vs_post`) on one metric; one hypothesis, tested once. Presentation only: claims never
    enter a run key.

    post / vs_post: `nms` or `nms_free` reads `eval.nms.<metric>` / `eval.nms_free.<metric>`
    (both are logged by every run); absent, the row's own headline `eval.<metric>`. Both sides
    on the same row are the same runs: a paired t-test on the per-seed differences; different
    rows are independent (Welch's t-test) unless `paired: true` with the reason in `pairing`.
    expect: what the claim says of `row` against `vs` in the metric's direction: `better` or
    `worse` (one-sided superiority; with a margin in points, non-inferiority: "within margin
    points, or better"), `differs` (two-sided), `equivalent` (within ±margin points: two
    one-sided tests).
    """

    row: str
    vs: str
    post: Literal["nms", "nms_free"] | None = None
    vs_post: Literal["nms", "nms_free"] | None = None
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]  # default: the layout's first
    expect: Literal["better", "worse", "differs", "equivalent"] = "better"
    margin: float = Field(default=0.0, ge=0.0)
    #: The effect the claim expects, in points in its direction (e.g. the paper's Δ): the report
    #: prints the seeds per side its test would need to show it with 80% power.
    effect: float | None = Field(default=None, gt=0.0)
    #: Different rows paired by seed (their runs share the seed's data order and initialisation,
    #: say); `pairing` says why. The same row on both sides is always paired (the same runs).
    paired: bool = False
    pairing: str = ""
    text: str = ""


class Decide(Strict):
    """Decide a table's claims by adding seeds (`harness decide`, `harness run --until-decided`): a
    group-sequential design planned before any look. Presentation only: never in a run key.

    looks: the seeds per row at which the claims are looked at, strictly increasing; the last is
    the cap. Seeds beyond the spec's own are new seed numbers after its largest, so the cells
    the spec already has keep their keys. spending: how the error α is spent over the looks
    (Lan-DeMets: O'Brien-Fleming-like spends little early, Pocock evenly). futility: a claim
    still open at a look before the cap whose t statistic (two-sided: |t|; equivalence: the
    smaller of its two one-sided t's) is below this threshold stops, "stopped for futility"
    (non-binding: the boundaries ignore it, so the error can only fall); null: never.
    """

    #: indices into the table's `claims` (0 = the first); absent: all of them
    claims: list[Annotated[int, Field(ge=0)]] | None = None
    looks: list[Annotated[int, Field(ge=3, le=1000)]] = Field(min_length=1)
    alpha: float = Field(default=0.05, gt=0.0, le=0.2)
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    #: the t threshold below which an open claim stops at a look before the cap (the default is
    #: `harness.report.sequential.FUTILITY`, chosen by bench/decide_calibration.py); null: never
    futility: float | None = Field(default=0.35, ge=-10.0, le=10.0)


class Table(Strict):
    title: str
    layout: Literal[
        "defcn_coco", "defcn_ablation", "defcn_crowdhuman", "date_coco", "date_crowdhuman",
        "quickstart", "fcos", "cocoeval",
    ]  # fmt: skip
    remark: str = ""
    #: The source README's notes under the table ("[1] *1x and 2x mean ...*"), printed under the
    #: rebuilt table in this order, one line each (presentation only).
    footnotes: list[str] = Field(default_factory=list)
    #: The comparisons the Δ column, its marks and the Holm family are made of. Without any,
    #: each row against its `compare_to` row or the table's baseline on the first metric,
    #: two-sided.
    claims: list[Claim] = Field(default_factory=list)
    #: Decide (some of) the claims by adding seeds: `harness decide`.
    decide: Decide | None = None


class Spec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    #: Partial config every cell starts from (validated once resolved).
    base: dict[str, Any]
    #: axis name -> value name -> overrides (nested mappings or dotted keys).
    axes: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    rows: list[Row] = Field(default_factory=list)
    #: Table names become file names of plots: letters, digits, `_`, `-` only.
    tables: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")], Table] = Field(default_factory=dict)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    #: Without rows: extra axis combinations to add / combinations to drop.
    include: list[Annotated[dict[str, str], Field(min_length=1)]] = Field(default_factory=list)
    exclude: list[Annotated[dict[str, str], Field(min_length=1)]] = Field(default_factory=list)
