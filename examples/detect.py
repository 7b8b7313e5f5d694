"""Detect objects with the Python API: a model, some images, boxes back, drawn and saved.

    python examples/detect.py --model yolov4.cfg --weights yolov4.weights dog.jpg horses.jpg --names coco.names
    python examples/detect.py --model yolov4-tiny-decoded.onnx dog.jpg        # an exported file needs nothing else

Official darknet weights: https://github.com/AlexeyAB/darknet/releases (or train your own
with `yolo4 train`). In this project's workspace, for instance:

    python examples/detect.py --model ../shared/reference/models/yolo-fastest-1.1.cfg \\
        --weights ../shared/reference/models/yolo-fastest-1.1.weights ../shared/reference/images/dog.jpg
"""

import argparse
from pathlib import Path

import cv2

import yolo4

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("images", nargs="+", help="image paths (numpy RGB arrays and PIL images work too)")
parser.add_argument("--model", required=True, help="zoo name or darknet .cfg (with --weights), or an .onnx / .tflite")
parser.add_argument("--weights", help="darknet .weights for a zoo name or .cfg")
parser.add_argument("--names", help="class names file (default: the model's; COCO's for an 80-class model)")
parser.add_argument("--conf", type=float, default=yolo4.DETECT_POSTPROCESS.conf, help="score threshold")
parser.add_argument("--out", default="runs/example", help="folder for the drawn images")
args = parser.parse_args()

# one settings object for the post-processing: darknet's detect defaults with our threshold
settings = yolo4.DETECT_POSTPROCESS.replace(conf=args.conf)
detector = yolo4.load(args.model, args.weights, names=args.names, postprocess=settings)  # device: CUDA if present
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
for result in detector(args.images):  # one Detections per image, boxes (N, 4) xyxy in the image's pixels
    print(f"{result.path}: {len(result)} objects, {sum(result.timings.values()):.1f} ms")
    for label, score, box in zip(result.labels, result.scores, result.boxes):
        print(f"  {label:<14} {score:.2f}  [{', '.join(f'{v:.0f}' for v in box)}]")
    cv2.imwrite(str(out / Path(result.path).name), cv2.cvtColor(result.draw(), cv2.COLOR_RGB2BGR))
