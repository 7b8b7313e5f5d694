"""The search's files: tune.csv round trips (a resumed search reads what it wrote), a foreign
tune.csv is refused, best.yaml is a training config that `TrainConfig.from_yaml` reads back."""

from __future__ import annotations

import math

import pytest

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning.record import best_config_entries, read_csv, set_options, write_best_yaml, write_csv
from yolo4.tuning.search import Trial
from yolo4.tuning.space import parse_space

SPACE = parse_space(
    {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "burn_in": [0, 100], "iou_loss": {"choices": ["ciou", "giou"]}}
)


def _trials():
    return [
        Trial(
            0, {"lr": 0.01, "burn_in": 20, "iou_loss": "ciou"}, (), "done", 0.31, 0.6, 0.3, 5, 61.5, [0.1, 0.2, 0.31]
        ),
        Trial(1, {"lr": 0.0234, "burn_in": 7, "iou_loss": "giou"}, (0,), "pruned", 0.05, 0.1, 0.04, 1, 9.0, [0.05]),
        Trial(2, {"lr": 0.001, "burn_in": 0, "iou_loss": "ciou"}, (0, 1), "failed", error="RuntimeError: boom, again"),
    ]


def test_csv_round_trip(tmp_path):
    path = write_csv(tmp_path / "tune.csv", list(reversed(_trials())), SPACE)
    back = read_csv(path, SPACE)
    assert [t.index for t in back] == [0, 1, 2]  # index order
    for a, b in zip(_trials(), back):
        assert (a.index, a.params, a.parents, a.status, a.epochs, a.error) == (
            b.index,
            b.params,
            b.parents,
            b.status,
            b.epochs,
            b.error,
        )
        for x, y in ((a.fitness, b.fitness), (a.map50, b.map50), (a.map, b.map), (a.time_s, b.time_s)):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-5)
        assert b.curve == pytest.approx(a.curve, abs=1e-5)
    assert type(back[0].params["burn_in"]) is int and type(back[0].params["lr"]) is float


def test_csv_of_another_space_or_broken_rows_is_refused(tmp_path):
    path = write_csv(tmp_path / "tune.csv", _trials(), SPACE)
    other = parse_space({"lr": [0.001, 0.1]})
    with pytest.raises(Yolo4Error, match="tune.csv: written for another search space"):
        read_csv(path, other)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace(",done,", ",finished,")]) + "\n")
    with pytest.raises(Yolo4Error, match=r"tune.csv:2: not a trial row \(status 'finished'\)"):
        read_csv(path, SPACE)


def test_best_yaml_is_a_train_config(tmp_path):
    base = TrainConfig(data="data/kangaroo", model="yolov4-tiny", img_size=256, batch=8, epochs=7, out="x", workers=0)
    best = _trials()[0]
    entries = best_config_entries(base, best)
    assert entries["data"] == "data/kangaroo" and entries["img_size"] == 256 and entries["batch"] == 8
    assert not {"epochs", "out", "workers"} & set(entries)  # how a run is run is not part of the result
    path = write_best_yaml(tmp_path / "best.yaml", base, best, epochs_per_trial=5, n=3)
    text = path.read_text()
    assert text.startswith("# yolo4 tune: the best of 3 trials of 5 epochs: trial 0, fitness 0.3100")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.data, cfg.model, cfg.img_size, cfg.batch) == ("data/kangaroo", "yolov4-tiny", 256, 8)
    assert (cfg.lr, cfg.burn_in, cfg.iou_loss) == (0.01, 20, "ciou")
    assert cfg.epochs == TrainConfig().epochs
    assert set_options(best, {"lr": 0.01, "burn_in": 10, "iou_loss": "ciou"}) == ["--set burn_in=20"]


def test_from_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("lr: 0.02\nsteps: [0.7, 0.9]\nweights: null\nema: false\n")
    cfg = TrainConfig.from_yaml(path, base=TrainConfig(batch=8))
    assert (cfg.lr, cfg.steps, cfg.weights, cfg.ema, cfg.batch) == (0.02, (0.7, 0.9), None, False, 8)
    for text, message in [
        ("learning_rate: 1\n", "cfg.yaml: train option 'learning_rate=1'"),
        ("lr: fast\n", "cfg.yaml: train option lr='fast': not a valid float"),
        ("- lr\n", "cfg.yaml: expected a mapping"),
        ("lr: [1\n", "cfg.yaml: not valid YAML"),
    ]:
        path.write_text(text)
        with pytest.raises(Yolo4Error, match=message):
            TrainConfig.from_yaml(path)
    with pytest.raises(Yolo4Error, match="nope.yaml: cannot read"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
