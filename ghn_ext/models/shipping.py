"""Shipping a trained GHN inside the package (a maintainer's step, once per release of a GHN): its file in
ghn_ext/checkpoints/ and its manifest entry (ghn_ext.models.pretrained reads both)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ghn_ext.core.checkpoints import load_checkpoint
from ghn_ext.core.files import write_json_atomic
from ghn_ext.core.run_log import training_seconds
from ghn_ext.models.ghn import CHECKPOINT_FORMAT, GraphHyperNetwork
from ghn_ext.models import pretrained


def export(name: str, source: str | Path, command: str, data: str, notes: dict[str, Any]) -> dict[str, Any]:
    """Ship the GHN of `source` (a ghn.pt) as `name`: its parameters, configuration and training settings
    only, written to ghn_ext/checkpoints/<name>.pt with a manifest entry recording `command`, `data`, its
    training time and `notes` (what it measured). A maintainer's step, run once per release of a GHN."""
    ghn = GraphHyperNetwork.load(source)
    trained = load_checkpoint(source, CHECKPOINT_FORMAT, what="GHN").get("train_config")
    path = pretrained.CHECKPOINT_DIR / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    ghn.save(path, extra={"train_config": trained} if trained else None)
    entry = {"file": path.name, "sha256": pretrained.sha256(path), "format": CHECKPOINT_FORMAT, "space": ghn.config.space,
             "bytes": path.stat().st_size, "command": command, "data": data,
             "training_hours": round(training_seconds(source) / 3600, 3), **notes}
    write_json_atomic({**pretrained.manifest(), name: entry}, pretrained.MANIFEST)
    for shipped in (path, pretrained.MANIFEST):  # atomic writes create private files; a package's are world-readable
        shipped.chmod(0o644)
    return entry


__all__ = ["export"]
