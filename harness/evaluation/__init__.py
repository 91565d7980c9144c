"""Evaluators identical to the official tools: COCO (pycocotools) and CrowdHuman (body mode).

Math only: evaluators return dicts; they never log (docs/architecture.md rule 7).
"""
