"""Datasets and the data-side bag of freebies.

    dataset     load_dataset(DATA, split) -> DetectionDataset (YOLO txt, YAML, darknet .data,
                COCO json, Pascal VOC xml; validation, cached label index, automatic split)
    formats/    the readers (yolo.py, coco.py, voc.py) and box validation (common.py)
    shapes      make_shapes(root, ShapesConfig()) -> data.yaml: the embedded procedural dataset
    transforms  letterbox / stretch, letterbox_boxes / unletterbox_boxes, hflip, scale_translate
    augment     AugmentConfig, mosaic, cutmix, mixup, hsv_adjust, train_sample, eval_sample,
                random_shape, multiscale_batch
    loader      build_loader(dataset, img_size, batch_size, augment, shuffle, workers, ...)
    report      dataset_report / check_dataset / show_dataset (the `yolo4 dataset` commands)

The names below are importable from `yolo4.data` directly; torch is imported only when
`build_loader` is first used.
"""

from __future__ import annotations

from yolo4.data.augment import AugmentConfig
from yolo4.data.dataset import DetectionDataset, load_dataset
from yolo4.data.shapes import SHAPES_NAMES, ShapesConfig, make_shapes
from yolo4.data.transforms import letterbox, letterbox_boxes, stretch, unletterbox_boxes

__all__ = [
    "AugmentConfig",
    "DetectionDataset",
    "SHAPES_NAMES",
    "ShapesConfig",
    "build_loader",
    "letterbox",
    "letterbox_boxes",
    "load_dataset",
    "make_shapes",
    "stretch",
    "unletterbox_boxes",
]


def __getattr__(name: str):
    if name == "build_loader":
        from yolo4.data.loader import build_loader

        return build_loader
    raise AttributeError(f"module 'yolo4.data' has no attribute {name!r}")
