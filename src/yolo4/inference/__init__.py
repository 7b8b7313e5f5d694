"""Inference: pre-processing, the Detector, runtimes of exported files, the detect run, speed."""
