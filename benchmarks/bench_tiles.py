"""Tiled inference against one pass over the whole image, at the same network input size.

    python benchmarks/bench_tiles.py --run runs/demo            # the demo's yolov4-tiny (256 px shapes)

The images: `shapes` drawn on a large canvas (default 1024x1024, 15-30 objects of 12-40 px, the
generator's classes and backgrounds), i.e. a photo far larger than the network input with
small objects. The model: a detector trained on the 256 px `shapes` images (the demo's
`best.cfg` + `best.weights`), run at `--input` (default 320, its evaluation size). Compared,
each on the same images through `evaluate` (conf 0.001, NMS 0.6, all labels, as `yolo4 val`):

    full image      the 1024 px image resized to the input (objects shrink to 4-13 px)
    tiles           256 px tiles (overlap 0.2) resized to the input, cut views dropped, IoU-NMS
    tiles + full    the same plus the whole-image pass
    tiles (NMM)     tiles + full merged by greedy non-maximum merging (IoS, union boxes) instead
    full @ tiles' pixels  the whole image at an input as large as the image (the cost reference)

Prints a table (mAP50, mAP50-95, ms per image, forward passes per image) and writes it to
`<out>/tiles_table.md` with a drawing of one image, full pass against tiles, `<out>/tiles_example.jpg`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from yolo4.data.shapes import SHAPES_NAMES, ShapesConfig, render_shapes_image
from yolo4.evaluation.evaluate import evaluate
from yolo4.inference.detector import Detector
from yolo4.inference.tiles import TileConfig, TiledDetector
from yolo4.ops.nms_config import VAL_POSTPROCESS
from yolo4.viz.draw import draw_boxes

REPO = Path(__file__).resolve().parents[1]


class Canvas:
    """Large `shapes` images in memory, as `evaluate` wants a dataset."""

    def __init__(self, count: int, size: int, objects: tuple[int, int], object_px: tuple[float, float], seed: int):
        self.cfg = ShapesConfig(
            seed=seed, num_train=0, num_val=count, img_size=size, num_objects=objects, size_range=object_px
        )
        self.names = list(SHAPES_NAMES)
        self.items = [render_shapes_image(self.cfg, "val", i) for i in range(count)]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int):
        return self.items[i]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a `yolo4 train --demo` folder")
    ap.add_argument("--cfg", default=None, help="darknet cfg (default RUN/train/best.cfg)")
    ap.add_argument("--weights", default=None, help="darknet weights (default RUN/train/best.weights)")
    ap.add_argument("--input", type=int, default=320, help="network input size of every variant")
    ap.add_argument("--tile", type=int, default=256, help="tile side in image pixels")
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=1024, help="canvas side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = args.cfg or str(Path(args.run) / "train" / "best.cfg")
    weights = args.weights or str(Path(args.run) / "train" / "best.weights")
    data = Canvas(args.images, args.size, (15, 30), (12.0, 40.0), seed=1)
    boxes = np.concatenate([it[1] for it in data.items])
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    print(
        f"{len(data)} images {args.size}x{args.size}, {len(boxes)} objects, median side {np.median(sides):.0f} px "
        f"({np.median(sides) * args.input / args.size:.1f} px at the {args.input} input when the image is resized)"
    )
    base = Detector(cfg, weights, names=data.names, img_size=args.input, postprocess=VAL_POSTPROCESS)
    big = Detector(cfg, weights, names=data.names, img_size=args.size, postprocess=VAL_POSTPROCESS)
    tile = TileConfig(size=args.tile, overlap=args.overlap, full_image=False)
    variants = [
        ("full image", base, 1),
        ("tiles", TiledDetector(base, tile), None),
        ("tiles + full", TiledDetector(base, TileConfig(size=args.tile, overlap=args.overlap)), None),
        (
            "tiles + full (NMM merge)",
            TiledDetector(base, TileConfig(size=args.tile, overlap=args.overlap, merge="nmm")),
            None,
        ),
        (f"full image at {args.size} input", big, 1),
    ]
    rows = []
    for name, det, passes in variants:
        if passes is None:
            passes = len(det.windows((args.size, args.size)))
        det.warmup()
        t0 = time.perf_counter()
        m = evaluate(det, data, batch_size=2, progress=False)
        ms = (time.perf_counter() - t0) * 1e3 / len(data)
        h, w = det.input_hw
        rows.append((name, f"{w}x{h}", passes, m.map50, m.map, ms))
        print(
            f"{name:28s} input {w}x{h}  passes/img {passes:3d}  mAP50 {m.map50:.3f}  mAP50-95 {m.map:.3f}  {ms:7.0f} ms/img"
        )
    table = [
        "| variant | network input | forward passes / image | mAP50 | mAP50-95 | ms / image |",
        "|---|---|---|---|---|---|",
    ]
    table += [f"| {n} | {i} | {p} | {a:.3f} | {b:.3f} | {ms:.0f} |" for n, i, p, a, b, ms in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiles_table.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))

    # one image: full pass (left) against tiles + full (right), detections above 0.3
    image = data.items[0][0]
    draws = []
    for det in (base, variants[2][1]):
        [r] = det.predict_batch([image])
        keep = r.scores > 0.3
        draws.append(
            cv2.resize(
                draw_boxes(image, r.boxes[keep], r.class_ids[keep], None, data.names),
                (768, 768),
            )
        )
    cv2.imwrite(str(out / "tiles_example.jpg"), cv2.cvtColor(np.concatenate(draws, 1), cv2.COLOR_RGB2BGR))
    print(f"table in {out / 'tiles_table.md'}, drawing in {out / 'tiles_example.jpg'}")


if __name__ == "__main__":
    main()
