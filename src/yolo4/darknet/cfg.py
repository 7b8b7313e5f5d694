"""Reading and writing darknet `.cfg` text.

    spec = read_cfg("yolov4.cfg")          # -> NetworkSpec
    write_cfg(spec, "copy.cfg")            # every layer and key survives the round trip

Syntax follows darknet's `read_cfg`: `[section]` headers, `key=value` lines, `#` and `;`
comments, white space ignored everywhere (darknet strips it, so `steps = 1, 2` is
`steps=1,2`). Errors name the file and line.
"""

from __future__ import annotations

import os
from pathlib import Path

from yolo4.darknet.layers import LAYERS, NetOptions, NetworkSpec
from yolo4.errors import CfgError

_SectionList = list[tuple[str, int, dict[str, str], dict[str, int]]]  # (type, header line, options, key lines)


def parse_sections(text: str, source: str = "<cfg>") -> _SectionList:
    """Split cfg text into sections. Returns [(type, header_line, {key: value}, {key: line})]."""
    sections: _SectionList = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())  # darknet strips all white space
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise CfgError(f"{source}:{lineno}: malformed section header '{raw.strip()}'")
            sections.append((line[1:-1], lineno, {}, {}))
            continue
        if not sections:
            raise CfgError(f"{source}:{lineno}: '{raw.strip()}' comes before any [section]")
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise CfgError(f"{source}:{lineno}: expected key=value, got '{raw.strip()}'")
        kind, _, options, key_lines = sections[-1]
        if key in options:
            raise CfgError(f"{source}:{lineno}: key '{key}' is given twice in [{kind}]")
        options[key] = value
        key_lines[key] = lineno
    return sections


def parse_cfg(text: str, source: str = "<cfg>") -> NetworkSpec:
    """Parse cfg text into a `NetworkSpec`, validating each layer on its own (the
    connections between layers are checked when shapes are inferred)."""
    sections = parse_sections(text, source)
    if not sections:
        raise CfgError(f"{source}: no sections found (is this a darknet .cfg file?)")
    kind, line, options, _ = sections[0]
    if kind not in ("net", "network"):
        raise CfgError(f"{source}:{line}: the first section must be [net], got [{kind}]")
    net = NetOptions.from_options(options, source, line)
    layers = []
    for kind, line, options, key_lines in sections[1:]:
        cls = LAYERS.get(kind)
        if cls is None:
            raise CfgError(f"{source}:{line}: unknown layer [{kind}] (supported: {', '.join(sorted(LAYERS))})")
        layers.append(cls.from_options(options, source, line, key_lines))
    if not layers:
        raise CfgError(f"{source}: the network has no layers after [net]")
    return NetworkSpec(net=net, layers=layers, source=source)


def read_cfg(path: str | os.PathLike) -> NetworkSpec:
    """Read a darknet .cfg file. Raises CfgError naming the file and line on bad input."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CfgError(f"{path}: cannot read cfg ({e.strerror or e})") from None
    return parse_cfg(text, str(path))


def format_cfg(spec: NetworkSpec) -> str:
    """The cfg text of a network (darknet-readable)."""
    chunks = [_section("net", spec.net.to_options())]
    for layer in spec.layers:
        chunks.append(_section(layer.KIND, layer.to_options()))
    return "\n".join(chunks)


def write_cfg(spec: NetworkSpec, path: str | os.PathLike) -> Path:
    """Write `spec` as a darknet .cfg file (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_cfg(spec), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _section(kind: str, options: dict[str, str]) -> str:
    return f"[{kind}]\n" + "".join(f"{k}={v}\n" for k, v in options.items())
