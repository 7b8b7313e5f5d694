"""yolo4: the YOLOv4 family of object detectors, darknet-compatible, in PyTorch."""

__version__ = "0.1.0"
