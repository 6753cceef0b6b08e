"""The JSON-lines log a training run writes beside its checkpoints (train_log.jsonl): its records, and
the training time it logged up to a checkpoint (what a GHN's initial cost is measured by)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def training_seconds(checkpoint: str | Path) -> float:
    """The training time logged beside a checkpoint (train_log.jsonl) up to the step it was saved at (a
    snapshot's; the whole log for a final model), 0 when there is no log."""
    log = Path(checkpoint).parent / "train_log.jsonl"
    if not log.exists():
        return 0.0
    step = torch.load(checkpoint, map_location="cpu", weights_only=True).get("step")
    return sum(r.get("seconds", 0.0) for r in read_log(log) if step is None or r.get("step", 0) < step)
