"""Resolved config -> detector. The only module of harness/model that reads a config."""

from __future__ import annotations

import functools

from harness.formats.paths import expand_vars, redact
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
from harness.model.detector import FCNDetector
from harness.model.fpn import FPN
from harness.model.head import Predictor, Towers
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


def build_predictor(pc: PredictorConfig, *, num_classes: int, channels: int, gn_groups: int, prior_prob: float) -> Predictor:
    return Predictor(
        num_classes=num_classes, channels=channels, assign=build_assigner(pc),
        box_coder=pc.box_coder, centerness=pc.centerness, filter=pc.filter, filter_kernel=pc.filter_kernel,
        filter_tau=pc.filter_tau, filter_score=pc.filter_score, gn_groups=gn_groups, use_scales=pc.scales, prior_prob=prior_prob,
        square_anchor_scale=pc.assigner.anchor_scale if pc.assigner.name == "anchor" else None,
        retina_anchors=pc.anchors.model_dump(exclude={"valid_pad"}) if pc.anchors is not None else None,
        anchor_valid_pad=pc.anchors.valid_pad if pc.anchors is not None else None,
        focal_alpha=pc.loss.focal_alpha, focal_gamma=pc.loss.focal_gamma, cls_weight=pc.loss.cls_weight,
        box_loss=pc.loss.box, box_weight=pc.loss.box_weight, box_weighting=pc.loss.box_weighting,
        l1_weight=pc.loss.l1_weight, ctr_weight=pc.loss.ctr_weight, ctr_norm_min=pc.loss.ctr_norm_min,
    )


def build_detector(model: ModelConfig, *, score_thresh: float = 0.05, topk_per_level: int = 1000,
                   topk_cap: str = "locations",
                   nms_thresh: float = 0.6, max_dets: int = 100) -> FCNDetector:
    bb = model.backbone
    if bb.name == "tiny":
        backbone = TinyBackbone(width=bb.tiny_width, norm="gn" if bb.norm == "gn" else "bn")
    else:
        try:
            backbone = ResNetBackbone(name=bb.name, freeze_at=bb.freeze_at, norm=bb.norm,
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
    aux = functools.partial(assign_aux, topk=model.aux.topk, alpha=model.aux.alpha) if model.aux else None
    return FCNDetector(backbone=backbone, fpn=fpn, towers=towers, predictor=predictor, o2m=o2m, aux_assign=aux,
                       aux_weight=model.aux.weight if model.aux else 1.0, score_thresh=score_thresh,
                       topk_per_level=topk_per_level, topk_cap=topk_cap, nms_thresh=nms_thresh, max_dets=max_dets)


def build_from_config(config) -> FCNDetector:
    """A resolved cell config -> its detector (inference settings from `eval`)."""
    ev = config.eval
    return build_detector(config.model, score_thresh=ev.score_thresh, topk_per_level=ev.topk_per_level,
                          topk_cap=ev.topk_cap,
                          nms_thresh=ev.nms_thresh, max_dets=ev.max_dets)
