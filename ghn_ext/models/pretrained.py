"""GHNs trained here and shipped inside the package, so that a user ranks architectures right after
`pip install`: `GraphHyperNetwork.pretrained("nb201")`, or `--ckpt nb201` on the command line (shipped with
ghn_ext.models.shipping.export).

Each lives in ghn_ext/checkpoints/ beside a manifest entry that records how it was made (the command, the
data, the training time, what it measured) and the SHA-256 of its file. Loading checks the digest (a
damaged or swapped file is refused) and the checkpoint format (a file written by a newer ghn_ext that
this one cannot read is refused with the version to install).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.models.formats import GHN_FORMAT as CHECKPOINT_FORMAT

CHECKPOINT_DIR = Path(__file__).parents[1] / "checkpoints"  # ghn_ext/checkpoints
MANIFEST = CHECKPOINT_DIR / "manifest.json"


def manifest() -> dict[str, dict[str, Any]]:
    """name -> entry of every shipped GHN."""
    if not MANIFEST.is_file():
        return {}
    try:
        entries = json.loads(MANIFEST.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"the pretrained-GHN manifest {MANIFEST} is damaged ({exc.msg}); reinstall ghn_ext") from None
    return entries


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrained_path(name: str) -> Path:
    """The verified file of the shipped GHN `name`; CheckpointError when there is none of that name, or
    its file is missing, damaged, or in a format this version cannot read."""
    entries = manifest()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise CheckpointError(f"no pretrained GHN named {name!r} (shipped: {known})")
    entry = entries[name]
    if entry.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"pretrained GHN {name!r} is in format {entry.get('format')!r}, which this ghn_ext "
                              f"cannot read (it reads {CHECKPOINT_FORMAT!r}); install ghn_ext "
                              f"{entry.get('requires', 'of the version that shipped it')}")
    path = CHECKPOINT_DIR / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"pretrained GHN {name!r}: {path} is missing; reinstall ghn_ext")
    if sha256(path) != entry["sha256"]:
        raise CheckpointError(f"pretrained GHN {name!r}: {path} does not match its checksum (damaged or "
                              "replaced); reinstall ghn_ext")
    return path


def resolve_checkpoint(spec: str | Path) -> Path:
    """A GHN file given on the command line: an existing path, else the name of a shipped GHN."""
    path = Path(spec)
    if path.exists() or str(spec) not in manifest():
        return path  # a missing file is reported by the loader, naming the path
    return pretrained_path(str(spec))


__all__ = ["CHECKPOINT_DIR", "MANIFEST", "manifest", "pretrained_path", "resolve_checkpoint", "sha256"]
