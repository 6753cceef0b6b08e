"""Architectures from text, one per line of a file (what `ghn score`, `show` and `train-final` read): each
line an architecture-graph JSON object or an architecture in its space's text format
(:attr:`ghn_ext.spaces.spec.SearchSpace.text_format`: a NAS-Bench-201 string, a classification cell as JSON)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ghn_ext.core.graph import ArchGraph, GraphError
from ghn_ext.spaces.spec import get_space, space_names


def parse_architecture(text: str, space: str, **skeleton: Any) -> ArchGraph:
    """One architecture of `space`: architecture-graph JSON as it is, or the space's text format built at
    `skeleton` (the space's defaults for settings not given); a GraphError says what is wrong with it."""
    if not isinstance(text, str):
        raise GraphError(f"an architecture is given as text, got {type(text).__name__}")
    text = text.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(f"not valid JSON ({exc})") from None
        if isinstance(d, dict) and "format" in d:
            return ArchGraph.from_dict(d)
    try:
        return get_space(space).parse_cell(text, **skeleton)
    except GraphError:
        other = next((name for name in space_names() if name != space and _parses(name, text)), None)
        if other is None:
            raise
        raise GraphError(f"a {other!r} architecture, but --space is {space!r}") from None


def _parses(space: str, text: str) -> bool:
    try:
        get_space(space).parse_cell(text)
        return True
    except GraphError:
        return False


def read_architectures(path: str | Path, space: str, **skeleton: Any) -> list[ArchGraph]:
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
            archs.append(parse_architecture(line, space, **skeleton))
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
