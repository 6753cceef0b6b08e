"""Architectures from text: NAS-Bench-201 strings, classification cells and architecture graphs as JSON,
one per line of a file (what `ghn score`, `show` and `train-final` read)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ghn_ext.core.graph import ArchGraph, GraphError
from ghn_ext.spaces import classification, nb201


def parse_architecture(text: str, num_blocks: int = 18, channels: Optional[int] = None,
                       cells_per_stage: int = 5) -> ArchGraph:
    """One architecture: a NAS-Bench-201 string, architecture-graph JSON, or a classification cell as
    JSON ({"ops": [...], "inputs": [[...], ...]}); a GraphError says what is wrong with it."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        return nb201.network(text, channels or 16, cells_per_stage)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise GraphError(f"expected a JSON object (a cell or an architecture graph), got {type(d).__name__}")
    if "format" in d:
        return ArchGraph.from_dict(d)
    return classification.cifar_network(classification.Cell.from_dict(d), num_blocks, channels or 32)


def read_architectures(path: str | Path, space: str, num_blocks: int = 18, channels: Optional[int] = None,
                       cells_per_stage: int = 5) -> list[ArchGraph]:
    """Architectures from a file, one per line (see :func:`parse_architecture`; # starts a comment)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"architecture file {path} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GraphError(f"{path} is not a text file of architectures (byte {exc.start} is not UTF-8)") from None
    archs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            archs.append(parse_architecture(line, num_blocks, channels, cells_per_stage))
        except GraphError as exc:
            message = str(exc)  # it may quote the line: a long one is cut, not echoed whole
            raise GraphError(f"{path}:{lineno}: " + (message[:300] + " ... (cut)" if len(message) > 300 else message)
                             ) from exc
        if archs[-1].space not in (space, "custom"):
            raise GraphError(f"{path}:{lineno}: a {archs[-1].space!r} architecture, but --space is {space!r}")
    if not archs:
        raise GraphError(f"{path} holds no architectures")
    return archs


__all__ = ["parse_architecture", "read_architectures"]
