from __future__ import annotations

import numpy as np

from yolo4.viz.draw import class_color, draw_boxes


def test_class_colors_are_stable_and_distinct():
    colors = [class_color(i) for i in range(20)]
    assert colors == [class_color(i) for i in range(20)]
    assert len(set(colors)) == 20


def test_draw_boxes_leaves_input_and_draws_edges():
    img = np.zeros((100, 120, 3), np.uint8)
    out = draw_boxes(
        img,
        np.array([[10.0, 30.0, 60.0, 80.0], [100, 0, 119, 20]]),
        [0, 3],
        [0.9, 0.5],
        names=["a", "b", "c", "dddddddddddddddd"],
    )
    assert img.sum() == 0  # input untouched
    edge = out[55, 9:12].max(axis=0).astype(int)  # left edge of the first box (anti-aliased)
    assert np.abs(edge - np.array(class_color(0))).max() < 40
    assert tuple(out[55, 35]) == (0, 0, 0)  # its inside stays clear
    assert out[:, 100:].any()  # the label of the box at the right edge is drawn inside the image
