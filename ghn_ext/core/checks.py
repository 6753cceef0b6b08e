"""Range checks of the public configurations (GHNConfig, TrainConfig, SearchConfig): a value that could
only crash later, loop forever or silently mean something else is refused where it enters."""
from __future__ import annotations

import math
from typing import Any, Optional


class InputError(ValueError):
    """A value a user gave (a flag, a config field, a file's contents) that cannot be used. The command
    line prints its message as one line; a plain ValueError from anywhere else is a bug and keeps its
    traceback."""


def require_int(what: str, name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    """ValueError naming `what`'s field `name` unless `value` is an integer in [low, high]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{what} {name} must be an integer {allowed}, got {value!r}")


MAX_SEED = 2 ** 32 - 1  # what every generator seeded here accepts (numpy's, torch's, random's)


def require_number(what: str, name: str, value: Any, low: float, high: float = math.inf,
                   low_open: bool = False, high_open: bool = False) -> None:
    """ValueError naming `what`'s field `name` unless `value` is a finite real number in the interval
    from low to high (open at either end as asked)."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
        raise InputError(f"{what} {name} must be a finite number in {interval}, got {value!r}")


def require_training_recipe(what: str, cfg: Any) -> None:
    """The fields an SGD recipe (final training, anytime training, a ground truth) shares, where present."""
    for name, low in (("epochs", 1), ("batch_size", 1), ("val_images", 1), ("checkpoint_every", 1),
                      ("cutout", 0)):
        if hasattr(cfg, name):
            require_int(what, name, getattr(cfg, name), low)
    if getattr(cfg, "train_images", None) is not None:
        require_int(what, "train_images", cfg.train_images, 1)
    require_int(what, "seed", cfg.seed, 0, MAX_SEED)
    require_number(what, "lr", cfg.lr, 0.0, 10.0, low_open=True)
    for name, high, high_open in (("momentum", 1.0, True), ("drop_path", 1.0, True), ("weight_decay", math.inf, False),
                                  ("aux_weight", math.inf, False), ("warmup_epochs", math.inf, False),
                                  ("grad_clip", math.inf, False)):
        if hasattr(cfg, name):
            require_number(what, name, getattr(cfg, name), 0.0, high, high_open=high_open)
