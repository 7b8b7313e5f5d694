"""yolo4: the YOLOv4 family of object detectors, darknet-compatible, in PyTorch.

    import yolo4
    detector = yolo4.load("yolov4.cfg", "yolov4.weights")
    for dets in detector(["dog.jpg", "horses.jpg"]):
        print(dets.boxes, dets.scores, dets.labels)      # boxes (N, 4) xyxy in the image's pixels

The public API (`yolo4.load`, `detect`, `train`, `tune`, `val`, `export`, `benchmark`, `info`, `Detector`,
`Detections`, `PostprocessConfig`, `TrainConfig`, `ExportOptions`, ...) lives in `yolo4.api` and
is imported on first use, so `import yolo4` and `import yolo4.darknet` stay light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from yolo4._version import __version__

# The public API: the one list of what `yolo4.api` exports (its `__all__`), kept here so that the
# lazy attribute lookup below needs no import.
_API = (
    "AnchorReport",
    "DETECT_POSTPROCESS",
    "EAGER",
    "FAST_CPU",
    "FAST_CUDA",
    "TRACK_POSTPROCESS",
    "VAL_POSTPROCESS",
    "BenchResult",
    "DatasetSummary",
    "DetectSummary",
    "Detections",
    "Detector",
    "ExportOptions",
    "ExportResult",
    "ModelInfo",
    "PostprocessConfig",
    "RayConfig",
    "SpeedConfig",
    "TileConfig",
    "TrackConfig",
    "TrackSummary",
    "TrainConfig",
    "TrainResult",
    "TuneResult",
    "TuneSettings",
    "anchors",
    "benchmark",
    "detect",
    "detect_dataset",
    "export",
    "info",
    "load",
    "track",
    "train",
    "tune",
    "val",
)
__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # pragma: no cover
    from yolo4.api import *  # noqa: F403
    from yolo4.api import export  # noqa: F401


def __getattr__(name: str) -> Any:
    # plain imports (no module named at run time): the api module, or the export package, which
    # is callable: yolo4.export(...) runs the export
    if name == "export":
        import yolo4.export  # noqa: F401

        return sys.modules["yolo4.export"]
    if name in _API or name == "api":
        import yolo4.api  # noqa: F401

        return sys.modules["yolo4.api"] if name == "api" else getattr(sys.modules["yolo4.api"], name)
    raise AttributeError(f"module 'yolo4' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
