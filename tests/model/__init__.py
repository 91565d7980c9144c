from harness.model.build import build_predictor
from harness.spec.schema import PredictorConfig


def predictor(assign, *, num_classes: int = 2, prior_prob: float = 0.01, **settings):
    """A predictor on 8 channels (4 GN groups) built from its `PredictorConfig` settings as a
    cell's is (harness/model/build.py), assigning with `assign` in place of its assigner."""
    pc = PredictorConfig.model_validate({"assigner": {"name": "fcos"}, **settings})
    pred = build_predictor(pc, num_classes=num_classes, channels=8, gn_groups=4, prior_prob=prior_prob)
    pred.assign = assign
    return pred
