"""Evaluation: COCO/darknet metrics and the val run."""
