"""yolo4.evaluation.evaluate: the dataset runner, its speed numbers, its files, and the fidelity
proof on the real COCO model (ground truth = OpenCV DNN's own detections)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from yolo4.errors import DataError
from yolo4.evaluation.evaluate import evaluate, predict_dataset
from yolo4.ops.nms import DETECT_POSTPROCESS

REF = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
REF_IMAGES = ("dog", "horses", "person")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The test machine's 2 cores are shared: OpenMP threads spinning against other
    processes make a small network 20x slower, so these tests run torch on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ListDataset:
    """The dataset protocol over in-memory lists."""

    def __init__(self, images, boxes, class_ids, names, paths=None):
        self.images, self.boxes, self.class_ids, self.names = images, boxes, class_ids, list(names)
        self.image_paths = paths if paths is not None else [Path(f"img{i}.jpg") for i in range(len(images))]

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i], self.boxes[i], self.class_ids[i]


def _toy_dataset(n=5, seed=0):
    rng = np.random.default_rng(seed)
    images, boxes, classes = [], [], []
    for i in range(n):
        h, w = int(rng.integers(100, 300)), int(rng.integers(100, 300))
        images.append(np.full((h, w, 3), i, dtype=np.uint8))
        k = int(rng.integers(0, 4))
        xy = rng.uniform(0, 50, (k, 2))
        boxes.append(np.concatenate([xy, xy + rng.uniform(10, 50, (k, 2))], axis=1).astype(np.float32))
        classes.append(rng.integers(0, 3, k).astype(np.int64))
    return ListDataset(images, boxes, classes, ["a", "b", "c"])


def test_oracle_detector_scores_one_and_writes_files(tmp_path):
    ds = _toy_dataset()
    seen = []

    def oracle(images):  # the callable protocol: looks the image up by its fill value
        seen.append(len(images))
        out = []
        for img in images:
            i = int(img[0, 0, 0])
            out.append((ds.boxes[i], np.linspace(0.9, 0.5, len(ds.boxes[i])), ds.class_ids[i]))
        return out

    m = evaluate(oracle, ds, batch_size=2, progress=False, save_json=tmp_path / "p.json", plots_dir=tmp_path / "plots")
    assert seen == [2, 2, 1]
    assert m.map == pytest.approx(1.0) and m.map50 == pytest.approx(1.0) and m.darknet_map50_101 == pytest.approx(1.0)
    assert m.num_images == 5 and m.num_gt.sum() == sum(len(b) for b in ds.boxes)
    assert m.speed["inference_ms"] > 0 and m.speed["fps"] == pytest.approx(1e3 / m.speed["inference_ms"])
    assert m.speed["batch"] == 2
    for png in ("pr_curves.png", "confusion_matrix.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 5_000

    # the JSON is accepted by pycocotools and scores 1 against the same ground truth
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from yolo4.evaluation.metrics import coco_ground_truth

    gt = coco_ground_truth([(b, c) for b, c in zip(ds.boxes, ds.class_ids)], ds.names, list(range(1, 6)), [1, 2, 3])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "p.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


class _Damaged(ListDataset):
    """Images `bad` cannot be decoded, as a truncated JPEG in a real download."""

    def __init__(self, ds, bad):
        super().__init__(ds.images, ds.boxes, ds.class_ids, ds.names, ds.image_paths)
        self.bad = set(bad)

    def load(self, i):
        if i in self.bad:
            raise DataError(f"img{i}.jpg: not a readable image: a truncated or corrupt JPEG file")
        return super().load(i)


def test_an_image_that_cannot_be_decoded_is_left_out_and_named(tmp_path, capsys):
    ds = _toy_dataset(n=6)
    ds.image_paths = [Path(f"{100 + i}.jpg") for i in range(6)]  # numeric stems: COCO image ids 100..105
    damaged = _Damaged(ds, bad=[1, 4])

    def oracle(images):
        return [(ds.boxes[int(im[0, 0, 0])], np.linspace(0.9, 0.5, len(ds.boxes[int(im[0, 0, 0])])),
                 ds.class_ids[int(im[0, 0, 0])]) for im in images]  # fmt: skip

    m = evaluate(oracle, damaged, batch_size=4, progress=False, save_json=tmp_path / "p.json")
    # scored on the four readable images: perfect, their boxes only
    assert m.map50 == pytest.approx(1.0) and m.num_images == 4
    assert m.num_gt.sum() == sum(len(ds.boxes[i]) for i in (0, 2, 3, 5))
    assert {r["image_id"] for r in json.loads((tmp_path / "p.json").read_text())} == {100, 102, 103, 105} - {
        100 + i for i in (0, 2, 3, 5) if not len(ds.boxes[i])
    }
    assert m.skipped == [f"img{i}.jpg: not a readable image: a truncated or corrupt JPEG file" for i in (1, 4)]
    err = capsys.readouterr().err
    assert "warning: img1.jpg: not a readable image" in err and "left out of the evaluation" in err
    assert "2 image(s) could not be decoded and are left out: img1.jpg" in m.summary()
    with pytest.raises(DataError, match=r"none of the 6 images can be decoded: img0.jpg"):
        evaluate(oracle, _Damaged(ds, bad=range(6)), progress=False)


def test_blind_detector_scores_zero():
    ds = _toy_dataset(seed=1)
    m = evaluate(
        lambda ims: [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) for _ in ims],
        ds,
        batch_size=16,
        progress=False,
    )
    assert m.map == 0 and m.map50 == 0 and m.num_predictions == 0
    assert m.confusion[:3, 3].sum() == m.num_gt.sum()  # every object missed


def test_numeric_file_stems_become_coco_image_ids(tmp_path):
    ds = _toy_dataset(n=2)
    ds.image_paths = [Path("000000397133.jpg"), Path("000000000139.jpg")]
    evaluate(
        lambda ims: [(np.array([[1.0, 1, 20, 20]]), np.array([0.5]), np.array([2])) for _ in ims],
        ds,
        progress=False,
        save_json=tmp_path / "p.json",
    )
    assert [r["image_id"] for r in json.loads((tmp_path / "p.json").read_text())] == [397133, 139]


def test_class_count_mismatch_is_an_error():
    class EightyClasses:
        num_classes = 80

        def __call__(self, images):
            return []

    with pytest.raises(DataError, match="80 classes but the dataset has 3"):
        evaluate(EightyClasses(), _toy_dataset(), progress=False)


# ---------------------------------------------------------------- fidelity on the real model
def _opencv_detections(cfg, weights, image_bgr, size=320, conf=0.25, nms=0.45):
    """OpenCV DNN's darknet path as in the reference README: plain resize to size x size,
    RGB, 1/255, best class per box with score > conf, per-class NMS. Returns xyxy boxes
    clipped to the image, scores, class ids."""
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    h, w = image_bgr.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(image_bgr, 1 / 255.0, (size, size), swapRB=True, crop=False))
    out = np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(net.getUnconnectedOutLayersNames())])
    cls = out[:, 5:].argmax(1)
    score = out[np.arange(len(out)), 5 + cls]
    keep = score > conf
    out, cls, score = out[keep], cls[keep], score[keep]
    xywh = np.stack([(out[:, 0] - out[:, 2] / 2) * w, (out[:, 1] - out[:, 3] / 2) * h, out[:, 2] * w, out[:, 3] * h], 1)
    kept = []
    for c in np.unique(cls):
        idx = np.nonzero(cls == c)[0]
        sel = cv2.dnn.NMSBoxes(xywh[idx].tolist(), score[idx].tolist(), conf, nms)
        kept.extend(idx[np.asarray(sel, dtype=np.int64).reshape(-1)].tolist())
    kept = sorted(kept, key=lambda i: -score[i])
    xyxy = np.concatenate([xywh[kept, :2], xywh[kept, :2] + xywh[kept, 2:]], axis=1)
    xyxy = np.clip(xyxy, 0, [w, h, w, h])
    return xyxy.astype(np.float32), score[kept], cls[kept].astype(np.int64)


@pytest.fixture(scope="module")
def reference_model():
    model = REF / "models"
    if not (model / "yolo-fastest-1.1.weights").is_file():
        pytest.skip(f"{REF} (shared reference data) is not available")
    import cv2

    names = [s.strip() for s in (model / "coco.names").read_text().splitlines() if s.strip()]
    images, boxes, classes, paths = [], [], [], []
    for stem in REF_IMAGES:
        p = REF / "images" / f"{stem}.jpg"
        bgr = cv2.imread(str(p))
        b, _, c = _opencv_detections(model / "yolo-fastest-1.1.cfg", model / "yolo-fastest-1.1.weights", bgr)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        boxes.append(b)
        classes.append(c)
        paths.append(p)
    return model, ListDataset(images, boxes, classes, names, paths)


def test_opencv_oracle_reproduces_the_reference_table(reference_model):
    _, ds = reference_model
    # README: dog.jpg -> car 0.897 [454 77 230 103] ... person 0.312 [64 73 49 44] (7 in all)
    assert [ds.names[c] for c in ds.class_ids[0]] == ["car", "dog", "cat", "bicycle", "car", "bicycle", "person"]
    np.testing.assert_allclose(ds.boxes[0][0], [454, 77, 454 + 230, 77 + 103], atol=1.5)
    assert [len(c) for c in ds.class_ids] == [7, 5, 3]


def test_fidelity_yolo_fastest_matches_opencv(reference_model):
    """The whole path (pre-process, network, decode, NMS, box mapping, matching) against
    OpenCV's own detections at the same settings: mAP50 >= 0.99."""
    from yolo4.inference.detector import Detector

    model, ds = reference_model
    det = Detector(
        model / "yolo-fastest-1.1.cfg",
        model / "yolo-fastest-1.1.weights",
        names=ds.names,
        img_size=320,
        resize="stretch",
        postprocess=DETECT_POSTPROCESS,
    )
    m = evaluate(det, ds, batch_size=2, progress=False)
    assert m.map50 >= 0.99, m.summary()
    assert m.darknet_map50_101 >= 0.99
    assert m.map >= 0.9  # boxes agree closely, not just at IoU 0.5
    assert m.num_predictions == sum(len(c) for c in ds.class_ids)  # nothing extra, nothing missing
    assert m.confusion[:-1, :-1].trace() == m.num_predictions
    assert {"preprocess_ms", "inference_ms", "nms_ms", "fps"} <= set(m.speed)
    assert m.speed["img_h"] == 320 and m.speed["img_w"] == 320
    assert math.isnan(m.ap_per_class[ds.names.index("zebra")])  # absent classes stay out of the mean


def test_predict_dataset_keeps_order_and_sizes(reference_model):
    from yolo4.inference.detector import Detector

    model, ds = reference_model
    det = Detector(
        model / "yolo-fastest-1.1.cfg",
        model / "yolo-fastest-1.1.weights",
        img_size=320,
        resize="stretch",
        postprocess=DETECT_POSTPROCESS,
    )
    gts, preds, sizes, speed, kept, skipped = predict_dataset(det, ds, batch_size=3, progress=False)
    assert sizes == [im.shape[:2] for im in ds.images] and kept == [0, 1, 2] and skipped == []
    assert [len(p[1]) for p in preds] == [7, 5, 3]
    for g, b in zip(gts, ds.boxes):
        np.testing.assert_allclose(g[0], b)


def _write_yolo_dataset(ds: ListDataset, root: Path) -> Path:
    """`ds` as a YOLO-layout dataset (images/val, labels/val, data.yaml) under `root`."""
    import shutil

    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for path, img, boxes, classes in zip(ds.image_paths, ds.images, ds.boxes, ds.class_ids):
        shutil.copy(path, root / "images" / "val" / path.name)
        h, w = img.shape[:2]
        cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / [w, h, w, h]
        lines = [f"{c} " + " ".join(f"{v:.8f}" for v in b) for c, b in zip(classes, cxcywh)]
        (root / "labels" / "val" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/val\nval: images/val\nnames: " + json.dumps(ds.names) + "\n"
    )
    return root


def test_yolo4_val_cli_on_opencv_annotated_images(reference_model, tmp_path, capsys):
    """`yolo4 val` end to end: a YOLO-layout dataset (labels = OpenCV's detections) read by
    load_dataset, the Detector built from cfg + weights, the printed report and the files."""
    from yolo4.cli import main

    model, ds = reference_model
    root = _write_yolo_dataset(ds, tmp_path / "data")
    out = tmp_path / "run"
    rc = main(
        [
            "val",
            "--data",
            str(root / "data.yaml"),
            "--model",
            str(model / "yolo-fastest-1.1.cfg"),
            "--weights",
            str(model / "yolo-fastest-1.1.weights"),
            "--img-size",
            "320",
            "--resize",
            "stretch",
            "--conf",
            "0.25",
            "--iou",
            "0.45",
            "--labels",
            "best",
            "--batch",
            "2",
            "--out",
            str(out),
            "--json",
            "preds.json",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    line = next(ln for ln in text.splitlines() if "IoU=0.50      | area=   all" in ln)
    assert float(line.rsplit("=", 1)[1]) >= 0.99, text
    assert "darknet-style mAP@0.50" in text and "Speed:" in text and "FPS" in text
    table = text[text.index("class  images") :].splitlines()
    assert table[1].split()[0] == "all"
    for png in ("pr_curves.png", "confusion_matrix.png"):
        assert (out / png).stat().st_size > 5_000
    results = json.loads((out / "preds.json").read_text())
    assert len(results) == 15 and {r["image_id"] for r in results} == {1, 2, 3}
    assert (out / "per_class.txt").read_text().count("\n") > 10


def test_yolo4_val_compares_darknet_weights_with_their_onnx_export(reference_model, tmp_path, capsys):
    """Issue item 4: the same command on an exported file, both in one comparison table; the
    float32 ONNX export must score what the PyTorch network scores."""
    pytest.importorskip("onnxruntime")
    from yolo4.cli import main
    from yolo4.darknet import load
    from yolo4.export import ExportOptions, export_model

    model, ds = reference_model
    cfg, weights = model / "yolo-fastest-1.1.cfg", model / "yolo-fastest-1.1.weights"
    onnx_path = tmp_path / "yolo-fastest-320.onnx"
    export_model(load(cfg, weights), ExportOptions(format="onnx", img_size=(320, 320)), onnx_path, ds.names)
    root = _write_yolo_dataset(ds, tmp_path / "data")
    rc = main(
        [
            "val",
            "--data",
            str(root / "data.yaml"),
            "--model",
            str(cfg),
            str(onnx_path),
            "--weights",
            str(weights),
            "--img-size",
            "320",
            "--resize",
            "stretch",
            "--labels",
            "best",
            "--out",
            str(tmp_path / "run"),
            "--json",
            "preds.json",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    rows = text[text.index("model ") :].splitlines()
    assert len(rows) == 3 and rows[1].startswith(str(weights)) and rows[2].startswith(str(onnx_path))
    torch_row, onnx_row = rows[1].split()[1:5], rows[2].split()[1:5]  # AP AP50 AP75 dn-AP50
    assert torch_row == onnx_row, text
    assert float(torch_row[1]) > 0.9  # conf 0.001: more detections than the ground truth, AP50 still high
    for f in (weights.name, onnx_path.name):
        assert (tmp_path / "run" / f / "pr_curves.png").is_file()
        assert json.loads((tmp_path / "run" / f / "preds.json").read_text())


def test_coco_json_dataset_is_scored_against_the_annotation_file(tmp_path):
    """A dataset read from a COCO json gives the official numbers: crowd regions ignored and
    sizes from segment areas (which the boxes alone cannot give), exactly as pycocotools on
    the files."""
    import cv2
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from yolo4.data.dataset import load_dataset
    from yolo4.evaluation.metrics import COCO_STATS

    rng = np.random.default_rng(5)
    doc = {"images": [], "annotations": [], "categories": [{"id": 2, "name": "bicycle"}, {"id": 7, "name": "train"}]}
    (tmp_path / "images").mkdir()
    for i in range(4):
        name = f"img_{i}.jpg"
        cv2.imwrite(str(tmp_path / "images" / name), np.full((200, 300, 3), 40 * i, np.uint8))
        doc["images"].append({"id": 1000 + i, "file_name": name, "height": 200, "width": 300})
        for _ in range(3):
            x, y = int(rng.integers(0, 150)), int(rng.integers(0, 80))
            w, h = rng.integers(36, 120, 2).tolist()
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": 1000 + i,
                    "category_id": int(rng.choice([2, 7])),
                    "bbox": [x, y, w, h],
                    "area": 0.3 * w * h,
                    "iscrowd": 0,  # a thin object: "small" by its segment
                    "segmentation": [[x, y, x + w, y, x, y + h]],
                }
            )
    doc["annotations"].append(
        {
            "id": len(doc["annotations"]) + 1,
            "image_id": 1000,
            "category_id": 2,
            "bbox": [150, 100, 140, 90],
            "area": 9000.0,
            "iscrowd": 1,
            "segmentation": [[150, 100, 290, 100, 290, 190, 150, 190]],
        }
    )
    ann_path = tmp_path / "instances_val.json"
    ann_path.write_text(json.dumps(doc))
    ds = load_dataset(ann_path, "all", cache=False, progress=False)
    assert len(ds) == 4

    def detector(images):  # jittered objects, one detection on the crowd region, one false positive
        out = []
        for img in images:
            i = int(round(img[0, 0, 0] / 40))
            anns = [a for a in doc["annotations"] if a["image_id"] == 1000 + i]
            boxes, scores, classes = [], [], []
            for a in anns:
                x, y, w, h = a["bbox"]
                boxes.append([x + rng.normal(0, 4), y + rng.normal(0, 4), x + w, y + h])
                scores.append(rng.uniform(0.3, 1))
                classes.append(ds.category_ids.index(a["category_id"]))
            boxes.append([10.0, 10, 40, 40])
            scores.append(0.95)
            classes.append(1)
            out.append((np.array(boxes), np.array(scores), np.array(classes)))
        return out

    m = evaluate(detector, ds, batch_size=3, progress=False, save_json=tmp_path / "res.json")
    assert m.coco_gt_source == str(ann_path) and "crowd regions ignored" in m.summary()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "res.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for name, theirs in zip(COCO_STATS, ev.stats):
        ours = getattr(m, name)
        assert math.isnan(ours) if theirs == -1 else ours == pytest.approx(theirs, abs=1e-12), (name, ours, theirs)
    assert not math.isnan(m.map_small)  # only the file's segment areas make these objects "small"


def test_model_pairs_pairs_darknet_models_with_weights_and_exports_alone():
    from yolo4.errors import Yolo4Error
    from yolo4.evaluation.evaluate import model_pairs

    assert model_pairs("a.cfg", "w.weights") == [("a.cfg", "w.weights")]
    assert model_pairs("a.cfg", ["w1", "w2"]) == [("a.cfg", "w1"), ("a.cfg", "w2")]
    assert model_pairs(["a.cfg", "m.onnx", "t.tflite"], "w") == [("a.cfg", "w"), ("m.onnx", None), ("t.tflite", None)]
    assert model_pairs("m.onnx", None) == [("m.onnx", None)]
    assert model_pairs("a.cfg", ["w", "m.onnx"]) == [("a.cfg", "w"), ("m.onnx", None)]  # the old spelling
    assert model_pairs(["a.cfg", "b.cfg"], "w") == [("a.cfg", "w"), ("b.cfg", "w")]
    with pytest.raises(Yolo4Error, match="2 darknet models and 2 weights files"):
        model_pairs(["a.cfg", "b.cfg"], ["w1", "w2"])
    with pytest.raises(Yolo4Error, match="darknet weights need --model"):
        model_pairs("m.onnx", "w.weights")
    with pytest.raises(Yolo4Error, match="no model"):
        model_pairs(None, None)


def test_yolo4_val_scores_every_image_of_a_coco_json_without_a_split(small_cfg_text, tmp_path, capsys):
    """A COCO json defines no split: `yolo4 val` scores all of its images (and says so), and its
    12 COCO numbers are pycocotools' on the same file. `--split val` still picks the 10 %."""
    import cv2
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    import yolo4.darknet as dn
    from yolo4.evaluation.evaluate import run_val
    from yolo4.evaluation.metrics import COCO_STATS
    from yolo4.inference.detector import Detector
    from yolo4.ops.nms_config import VAL_POSTPROCESS

    torch.manual_seed(0)
    (tmp_path / "small.cfg").write_text(small_cfg_text)
    net = dn.Darknet(dn.parse_cfg(small_cfg_text, "small.cfg"))
    dn.save_weights(net, tmp_path / "small.weights")
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    images = []
    for i in range(12):
        im = (rng.random((72, 96, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "images" / f"im{i}.png"), im[..., ::-1])
        images.append(im)
    # ground truth: the network's own three best boxes per image, so that the scores are far from 0
    det = Detector(tmp_path / "small.cfg", tmp_path / "small.weights", postprocess=VAL_POSTPROCESS)
    doc = {"images": [], "annotations": [], "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]}
    for i, r in enumerate(det(images)):
        doc["images"].append({"id": 100 + i, "file_name": f"im{i}.png", "width": 96, "height": 72})
        for (x1, y1, x2, y2), c in zip(r.boxes[:3].tolist(), r.class_ids[:3].tolist()):
            w, h = x2 - x1, y2 - y1
            doc["annotations"].append(
                {"id": len(doc["annotations"]) + 1, "image_id": 100 + i, "category_id": [5, 9][c],
                 "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
    gt = tmp_path / "instances_test.json"
    gt.write_text(json.dumps(doc))

    [m] = run_val(gt, model=tmp_path / "small.cfg", weights=tmp_path / "small.weights", json_path="preds.json",
                  out=tmp_path / "val", progress=False)  # fmt: skip
    out = capsys.readouterr().out
    assert "[all: every image (the source defines no split)], 12 images" in out
    assert m.num_images == 12 and m.map50 > 0.5
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "val" / "preds.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(ev.params.imgIds) == 12
    for name, theirs in zip(COCO_STATS, ev.stats):
        ours = getattr(m, name)
        assert math.isnan(ours) if theirs == -1 else ours == pytest.approx(theirs, abs=1e-12), (name, ours, theirs)

    [part] = run_val(gt, split="val", model=tmp_path / "small.cfg", weights=tmp_path / "small.weights",
                     out=None, progress=False)  # fmt: skip
    assert (
        part.num_images == 1
        and "[val: a seeded 90/10 split of a source without one], 1 images" in capsys.readouterr().out
    )
