"""Readers of annotation and detection files, with validation that names file and line.

A bottom layer shared by harness.data and harness.evaluation (which may not import each
other): COCO instances / results json and CrowdHuman .odgt.
"""
