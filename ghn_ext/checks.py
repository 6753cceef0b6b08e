"""Range checks of the public configurations (GHNConfig, TrainConfig, SearchConfig): a value that could
only crash later, loop forever or silently mean something else is refused where it enters."""
from __future__ import annotations

from typing import Any, Optional


def require_int(what: str, name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    """ValueError naming `what`'s field `name` unless `value` is an integer in [low, high]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{what} {name} must be an integer {allowed}, got {value!r}")
