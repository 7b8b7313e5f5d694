"""The post-processing settings: one frozen `PostprocessConfig` (conf, iou, NMS kind, labels
rule, max_det) that every caller builds once and passes down unchanged: `yolo4 detect`,
`yolo4 val`, `yolo4 benchmark`, validation during training (`yolo4.training.validation`) and
the NMS inside exported ONNX graphs (`yolo4.export.ExportOptions.postprocess`). The function
that applies it is `yolo4.ops.nms.postprocess` (which re-exports everything here).

Two presets carry darknet's defaults for the two jobs:

    DETECT_POSTPROCESS  conf 0.25,  iou 0.45, greedy, labels "best", max_det 300 (drawing boxes:
                        OpenCV's darknet sample, one label per box)
    VAL_POSTPROCESS     conf 0.001, iou 0.6,  greedy, labels "all",  max_det 300 (scoring mAP:
                        darknet's `map`, every class above the threshold)
    TRACK_POSTPROCESS   conf 0.1,   iou 0.45, greedy, labels "best", max_det 300 (`yolo4 track`:
                        ByteTrack's second association uses the boxes between 0.1 and 0.5)

No torch here, so the command line reads the defaults without importing it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from yolo4.errors import Yolo4Error

NMS_KINDS = ("greedy", "agnostic", "diou")  # yolo4.ops.nms.get_nms
LABEL_RULES = ("best", "all")  # yolo4.ops.nms.CANDIDATES


@dataclass(frozen=True)
class PostprocessConfig:
    """How decoded boxes become detections: one object, built once (from the command line or
    by hand) and passed down unchanged; invalid values raise Yolo4Error when it is made.

    conf: keep scores obj * cls > conf, in [0, 1).
    iou: NMS overlap threshold, in (0, 1].
    nms: "greedy" (class-aware), "agnostic" (across classes) or "diou" (class-aware DIoU-NMS
        with the cfg's `beta_nms`); see `get_nms`.
    labels: "best" (one class per box, as OpenCV) or "all" (every class > conf, as darknet).
    max_det: at most this many detections per image, the highest scores (inside an exported
        ONNX graph: per class, ONNX NonMaxSuppression's `max_output_boxes_per_class`).
    max_nms: only this many of the highest-scoring candidates enter NMS (a guard for very low
        conf; darknet has none, and at conf 0.25 it never binds).

    `DETECT_POSTPROCESS` and `VAL_POSTPROCESS` are the two presets; change one field with
    `VAL_POSTPROCESS.replace(conf=0.01)`.
    """

    conf: float = 0.25
    iou: float = 0.45
    nms: str = "greedy"
    labels: str = "best"
    max_det: int = 300
    max_nms: int = 30000

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.conf < 1.0:
            problems.append(f"conf {self.conf} must be in [0, 1)")
        if not 0.0 < self.iou <= 1.0:
            problems.append(f"iou {self.iou} must be in (0, 1]")
        if self.nms not in NMS_KINDS:
            problems.append(f"unknown NMS '{self.nms}' (choose from {', '.join(NMS_KINDS)})")
        if self.labels not in LABEL_RULES:
            problems.append(f"unknown labels rule '{self.labels}' (choose from {', '.join(LABEL_RULES)})")
        if self.max_det < 1 or self.max_nms < 1:
            problems.append(f"max_det {self.max_det} and max_nms {self.max_nms} must be >= 1")
        if problems:
            raise Yolo4Error("post-processing settings: " + "; ".join(problems))

    def replace(self, **changes: float | int | str) -> PostprocessConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for logs: `conf 0.25, NMS greedy 0.45, labels best, max_det 300`."""
        return f"conf {self.conf:g}, NMS {self.nms} {self.iou:g}, labels {self.labels}, max_det {self.max_det}"


DETECT_POSTPROCESS = PostprocessConfig()  # yolo4 detect: OpenCV's darknet sample (conf 0.25, NMS 0.45, best class)
VAL_POSTPROCESS = PostprocessConfig(conf=0.001, iou=0.6, labels="all")  # yolo4 val / mAP: darknet's `map`
TRACK_POSTPROCESS = PostprocessConfig(conf=0.1)  # yolo4 track: ByteTrack also associates the low-score boxes
