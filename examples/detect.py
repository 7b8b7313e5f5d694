"""Detect objects with the Python API: a model, some images, boxes back, drawn and saved.

    python examples/detect.py yolov4.cfg yolov4.weights dog.jpg horses.jpg --names coco.names

Official darknet weights: https://github.com/AlexeyAB/darknet/releases (or train your own
with `yolo4 train`). In this project's workspace, for instance:

    python examples/detect.py ../shared/reference/models/yolo-fastest-1.1.{cfg,weights} \
        ../shared/reference/images/dog.jpg
"""

import argparse
from pathlib import Path

import cv2

from yolo4.inference.detector import Detector

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("cfg")
parser.add_argument("weights")
parser.add_argument("images", nargs="+", help="image paths (numpy RGB arrays and PIL images work too)")
parser.add_argument("--names", help="class names file (default: COCO's for an 80-class model)")
parser.add_argument("--out", default="runs/example", help="folder for the drawn images")
args = parser.parse_args()

detector = Detector(args.cfg, args.weights, names=args.names, conf=0.25, iou=0.45)  # resize: the cfg's letter_box
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
for result in detector(args.images):  # one Detections per image, boxes xyxy in the image's pixels
    print(f"{result.path}: {len(result)} objects, {sum(result.timings.values()):.1f} ms")
    for label, score, box in zip(result.labels, result.scores, result.boxes):
        print(f"  {label:<14} {score:.2f}  [{', '.join(f'{v:.0f}' for v in box)}]")
    cv2.imwrite(str(out / Path(result.path).name), cv2.cvtColor(result.draw(), cv2.COLOR_RGB2BGR))
