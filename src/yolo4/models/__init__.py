"""The model zoo (YOLOv3/YOLOv4 family as Python builders) and model summaries.

from yolo4.models import build, load_model
spec = build("yolov4-csp", num_classes=3)        # NetworkSpec, darknet layer list
model = load_model("yolov4", "yolov4.weights")   # Darknet module, eval mode
"""

from __future__ import annotations

from yolo4.models.diff import diff_specs
from yolo4.models.summary import format_info, model_info, predicted_fps
from yolo4.models.zoo import (
    ZOO,
    build,
    load_model,
    resolve_spec,
    set_input_size,
    set_num_classes,
)

__all__ = [
    "ZOO",
    "build",
    "diff_specs",
    "format_info",
    "load_model",
    "model_info",
    "predicted_fps",
    "resolve_spec",
    "set_input_size",
    "set_num_classes",
]
