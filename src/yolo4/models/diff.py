"""Readable differences between two networks (is my cfg the zoo model? did a round trip keep
everything?).

    for line in diff_specs(build("yolov4"), read_cfg("yolov4.cfg")):
        print(line)        # e.g. "layer 139 [yolo]: scale_x_y 1.2 != 1.1"
"""

from __future__ import annotations

import dataclasses

from yolo4.darknet.layers import Layer, NetworkSpec


def _fields(layer: Layer) -> dict[str, object]:
    """Typed keys and extras of a layer (bookkeeping such as the cfg line is not compared)."""
    out = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.compare and f.name != "extra"}
    out.update({f"extra[{k}]": v for k, v in layer.extra.items()})
    return out


def diff_layers(a: Layer, b: Layer) -> list[str]:
    """'key a != b' for every typed key or extra where two layers differ ([] if equal)."""
    if type(a) is not type(b):
        return [f"[{a.KIND}] != [{b.KIND}]"]
    fa, fb = _fields(a), _fields(b)
    return [
        f"{k} {fa.get(k, '<absent>')} != {fb.get(k, '<absent>')}"
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, "<absent>") != fb.get(k, "<absent>")
    ]


def diff_specs(a: NetworkSpec, b: NetworkSpec, limit: int = 20) -> list[str]:
    """Human-readable differences between two networks: [net] geometry and options, the
    layer count, and every differing layer key (at most `limit` lines). [] means equal."""
    lines: list[str] = []
    na, nb = a.net.to_options(), b.net.to_options()
    for key in sorted(set(na) | set(nb)):
        if na.get(key) != nb.get(key):
            lines.append(f"[net] {key}: {na.get(key, '<absent>')} != {nb.get(key, '<absent>')}")
    if len(a.layers) != len(b.layers):
        lines.append(f"layer count: {len(a.layers)} ({a.source}) != {len(b.layers)} ({b.source})")
    for i, (la, lb) in enumerate(zip(a.layers, b.layers)):
        for d in diff_layers(la, lb):
            lines.append(f"layer {i} [{la.KIND}]: {d}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
