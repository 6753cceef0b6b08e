"""Checkpoints: the one error a missing, damaged or foreign checkpoint becomes, and how every training loop
(GHN, final and anytime training) saves its state and resumes from it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from ghn_ext.core.files import atomic_save, checksum_matches, with_checksum


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or of another kind or search space."""


@contextmanager
def resuming_from(path: Path) -> Iterator[None]:
    """Wrap the loading of a run's checkpoint: any failure becomes one CheckpointError naming `path`
    (a damaged file raises many kinds of errors; the run folder is left untouched)."""
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
    except Exception as exc:
        raise CheckpointError(f"cannot resume from {path}: corrupt checkpoint ({type(exc).__name__})") from exc


def load_checkpoint(path: str | Path, fmt: str, map_location="cpu", what: Optional[str] = None) -> dict[str, Any]:
    """The dict saved at `path` with format tag `fmt` (a `what` checkpoint: the tag unless told), or a
    CheckpointError: missing, unreadable, of another format, or contents that no longer match their
    recorded checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a ghn_ext checkpoint "
                              f"(torch.load failed with {type(exc).__name__})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise CheckpointError(f"{path} is not a ghn_ext {what or fmt} checkpoint")
    if not checksum_matches(ckpt):
        raise CheckpointError(f"checkpoint {path} is damaged: its contents do not match the checksum saved "
                              "with them")
    return ckpt


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """A training state written atomically, with the checksum :func:`load_checkpoint` checks."""
    atomic_save(with_checksum(state), path)


def resume_state(path: str | Path, fmt: str, what: str) -> Optional[dict[str, Any]]:
    """The training state a run saved at `path` (format tag `fmt`, a `what` checkpoint), or None when
    there is none and the run starts fresh; any failure is one CheckpointError naming the file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, fmt, what=what)
    except CheckpointError as exc:  # it names the file and what is wrong with it
        raise CheckpointError(f"cannot resume: {exc}") from exc
