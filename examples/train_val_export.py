"""Train, evaluate and export with the Python API: the same steps as `yolo4 train`, `yolo4 val`
and `yolo4 export`, on the embedded `shapes` data at 128 px.

    python examples/train_val_export.py [--out runs/example-train] [--epochs 3]

It shows the calls, not accuracy: 3 epochs leave mAP near 0 (`yolo4 train --demo` trains a
useful model in 13 minutes on 2 CPU cores).

Every keyword is a command-line option of the same name (`yolo4 train --epochs 3` is
`yolo4.train(..., epochs=3)`; any TrainConfig field also works, like `--set lr=0.02`).
"""

import argparse
from pathlib import Path

import yolo4
from yolo4.data.shapes import make_shapes_from_args

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="runs/example-train", help="folder for the data, the run and the exports")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()
out = Path(args.out)

# a small dataset: 200 train / 50 val images of 7 shape classes at 128 px (YOLO txt + data.yaml)
data = make_shapes_from_args(out / "data", num_train=200, num_val=50, img_size=128)

result = yolo4.train(
    data,
    model="yolov4-tiny",
    epochs=args.epochs,
    batch=16,
    img_size=128,
    lr=0.02,  # any TrainConfig field by name
    burn_in=20,
    out=out / "run",
)
print(f"best mAP50 during training {result.best_map50:.3f}; darknet files {result.best_cfg}, {result.best_weights}")

# evaluate the darknet files with val's defaults (conf 0.001, NMS 0.6, every class), or change one field
[metrics] = yolo4.val(data, model=result.best_cfg, weights=result.best_weights, out=out / "val")
print(f"mAP50 {metrics.map50:.3f}, mAP50-95 {metrics.map:.3f}")

# export to ONNX with boxes and scores as separate tensors, then detect with the exported file
names = result.out_dir / "names.txt"  # the class names the run trained on, stored in the file's metadata
exported = yolo4.export(result.best_cfg, result.best_weights, format="onnx", outputs="decoded", names=names)
detector = yolo4.load(exported.paths[0])
[dets] = detector(str(next((Path(data).parent / "images" / "val").glob("*.jpg"))))
print(f"{dets.path}: {list(zip(dets.labels, dets.scores.round(2)))}")
