"""Resolved config -> detector. The only module of harness/model that reads a config."""

from __future__ import annotations

import functools

from harness.formats.paths import expand_vars, redact
from harness.model.anchors import RetinaAnchors, SquareAnchors
from harness.model.assign.aware import (
    assign_aux,
    assign_detr_hungarian,
    assign_fg_loss,
    assign_max_iou,
    assign_poto,
    assign_poto_argmax,
)
from harness.model.assign.static import assign_anchor, assign_atss, assign_center, assign_fcos
from harness.model.backbone import ResNetBackbone, TinyBackbone, WeightsError
from harness.model.coders import BOX_CODERS
from harness.model.criterion import Criterion
from harness.model.detector import FCNDetector
from harness.model.filter3d import MaxFilter3D
from harness.model.fpn import FPN
from harness.model.head import Predictor, Towers, aux_losses, output_convs
from harness.spec.schema import ModelConfig, PredictorConfig

#: assigner name -> function (docs/architecture.md rule 3: one plain dict, no registry)
ASSIGNERS = {
    "fcos": assign_fcos,
    "atss": assign_atss,
    "anchor": assign_anchor,
    "center": assign_center,
    "fg_loss": assign_fg_loss,
    "poto": assign_poto,
    "poto_argmax": assign_poto_argmax,
    "detr_hungarian": assign_detr_hungarian,
    "max_iou": assign_max_iou,
}


def build_assigner(pc: PredictorConfig):
    params = pc.assigner.model_dump()
    name = params.pop("name")
    if name in ("fg_loss", "detr_hungarian"):
        params.update(focal_alpha=pc.loss.focal_alpha, focal_gamma=pc.loss.focal_gamma)
    return functools.partial(ASSIGNERS[name], **params)


def build_anchors(pc: PredictorConfig) -> RetinaAnchors | SquareAnchors | None:
    """RetinaNet anchors from the `anchors` section, the Anchor row's square anchor, else None
    (anchor-free)."""
    if pc.anchors is not None:
        a = pc.anchors
        return RetinaAnchors(a.octave_base_scale, a.scales_per_octave, tuple(a.ratios), a.valid_pad)
    if pc.assigner.name == "anchor":
        return SquareAnchors(pc.assigner.anchor_scale)
    return None


def build_criterion(pc: PredictorConfig) -> Criterion:
    loss = pc.loss
    return Criterion(
        product_focal=pc.filter != "none" and pc.filter_score == "product", focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma, cls_weight=loss.cls_weight, box_loss=loss.box, box_weight=loss.box_weight,
        box_weighting=loss.box_weighting, ctr_norm_min=loss.ctr_norm_min, centerness=pc.centerness != "none",
        ctr_weight=loss.ctr_weight, l1_weight=loss.l1_weight, iou_smooth=loss.iou_smooth,
        normalizer=loss.normalizer)


def build_predictor(pc: PredictorConfig, *, num_classes: int, channels: int, gn_groups: int, prior_prob: float) -> Predictor:
    anchors = build_anchors(pc)
    # the output convs first, then the 3DMF: the order the initial weights of a seed come in
    convs = output_convs(channels=channels, num_classes=num_classes,
                         per_location=anchors.per_location if anchors is not None else 1, prior_prob=prior_prob,
                         centerness=pc.centerness != "none")
    filt = None
    if pc.filter != "none":
        filt = MaxFilter3D(channels=channels, kernel=pc.filter_kernel, tau=pc.filter_tau, norm=pc.filter == "3dmf",
                           gn_groups=gn_groups)
    return Predictor(num_classes=num_classes, convs=convs, coder=BOX_CODERS[pc.box_coder], assign=build_assigner(pc),
                     criterion=build_criterion(pc), anchors=anchors, ctr_on_reg=pc.centerness == "reg", filter=filt,
                     filter_logit=filt is not None and pc.filter_score == "logit", use_scales=pc.scales)


def build_detector(model: ModelConfig, *, score_thresh: float = 0.05, topk_per_level: int = 1000,
                   topk_cap: str = "locations", topk_by: str = "cls",
                   nms_thresh: float = 0.6, max_dets: int = 100) -> FCNDetector:
    bb = model.backbone
    if bb.name == "tiny":
        backbone = TinyBackbone(width=bb.tiny_width, norm="gn" if bb.norm == "gn" else "bn")
    else:
        try:
            backbone = ResNetBackbone(name=bb.name, freeze_at=bb.freeze_at, norm=bb.norm, stride_in_1x1=bb.stride_in_1x1,
                                      weights=expand_vars(bb.weights, "model.backbone.weights") if bb.weights else None)
        except WeightsError as exc:  # names the file, never a variable's value that is not a path
            raise WeightsError(redact(str(exc), bb.weights)) from None
    ch = model.fpn.channels
    fpn = FPN(in_channels=backbone.out_channels, channels=ch, init=model.fpn.name)
    towers = Towers(channels=ch, num_convs=model.head.num_convs, norm=model.head.norm, gn_groups=model.head.gn_groups)
    common = dict(num_classes=model.num_classes, channels=ch, gn_groups=model.head.gn_groups,
                  prior_prob=model.head.prior_prob)
    predictor = build_predictor(model.predictor, **common)
    o2m = build_predictor(model.o2m, **common) if model.o2m is not None else None
    aux = None
    if model.aux is not None:  # on the predictor's outputs, with its focal loss settings
        loss = model.predictor.loss
        aux = functools.partial(aux_losses, assign=functools.partial(assign_aux, topk=model.aux.topk,
                                                                     alpha=model.aux.alpha),
                                weight=model.aux.weight, focal_alpha=loss.focal_alpha, focal_gamma=loss.focal_gamma)
    return FCNDetector(backbone=backbone, fpn=fpn, towers=towers, predictor=predictor, o2m=o2m, aux_loss=aux,
                       score_thresh=score_thresh, topk_per_level=topk_per_level, topk_cap=topk_cap, topk_by=topk_by,
                       nms_thresh=nms_thresh, max_dets=max_dets)


def build_from_config(config) -> FCNDetector:
    """A resolved cell config -> its detector (inference settings from `eval`)."""
    ev = config.eval
    return build_detector(config.model, score_thresh=ev.score_thresh, topk_per_level=ev.topk_per_level,
                          topk_cap=ev.topk_cap, topk_by=ev.topk_by,
                          nms_thresh=ev.nms_thresh, max_dets=ev.max_dets)
