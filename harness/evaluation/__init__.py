"""Evaluators identical to the official tools: COCO (pycocotools) and CrowdHuman (body mode);
`kinds.py` says per evaluator what it reports, its headline metric, its detections file and how
it scores.

Math only: evaluators return dicts; they never log (docs/architecture.md rule 7).
"""
