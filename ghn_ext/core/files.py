"""Atomic file writes: a crash mid-write never leaves half a checkpoint or ranking behind; and the lock
that processes sharing one results file hold while they re-read and rewrite it."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
import contextlib
from contextlib import contextmanager
from glob import escape as glob_escape
from typing import Any, BinaryIO, Callable, Iterator

import torch
from filelock import FileLock, Timeout
from ghn_ext.core.checks import InputError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through `write` into a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_lock(path: str | Path) -> FileLock:
    """The lock (PATH.lock, beside `path`) held while re-reading and rewriting a shared results file."""
    return FileLock(f"{path}.lock")


CHECKSUM_KEY = "sha256"


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents (nested dicts and lists of tensors and plain values), in an
    order that does not depend on how they were built: what a damaged file no longer matches."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for item in x:
                feed(item)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()


def with_checksum(obj: dict) -> dict:
    """`obj` with the digest of its contents under CHECKSUM_KEY (see :func:`checksum_matches`)."""
    return {**obj, CHECKSUM_KEY: content_digest({k: v for k, v in obj.items() if k != CHECKSUM_KEY})}


def checksum_matches(obj: dict) -> bool:
    """False when `obj` records a digest its contents no longer match (flipped bytes that torch.load
    read without complaint); True for files written before checkpoints carried one."""
    recorded = obj.get(CHECKSUM_KEY)
    return recorded is None or recorded == content_digest({k: v for k, v in obj.items() if k != CHECKSUM_KEY})


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def truncate_log(path: str | Path, steps_done: int) -> None:
    """Keep the JSON-lines records of steps before `steps_done` (and drop lines cut short by a crash),
    so the log of a run resumed from its checkpoint equals that of an uninterrupted run."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] < steps_done:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in keep))


def read_records(path: str | Path) -> Iterator[dict]:
    """The JSON objects of a JSON-lines file, in order; a line cut short by a kill (or anything not an
    object) is skipped; nothing when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
        if isinstance(record, dict):
            yield record


def end_with_newline(path: str | Path) -> None:
    """After a JSON-lines record cut short by a kill, start the next appended one on a line of its own."""
    path = Path(path)
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")


class InUseError(RuntimeError):
    """Another run holds the output folder or file."""


@contextmanager
def _held(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold the operating system's lock at `lock_path` (released on any exit, a crash included), its
    holder's pid beside it; a second holder meets an InUseError: `busy`, naming the first's pid."""
    lock, owner = FileLock(str(lock_path)), Path(f"{lock_path}.pid")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner.read_text().strip() if owner.exists() else "unknown"
        raise InUseError(f"{busy} (pid {holder}); wait for it to finish or choose another output") from None
    try:
        owner.write_text(str(os.getpid()))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


@contextmanager
def run_folder(path: str | Path) -> Iterator[Path]:
    """Hold output folder `path` for one run: a second run meets an InUseError naming the holder's pid
    instead of interleaving its log, checkpoints or scores with the first's. Temporary files of saves a
    kill interrupted are removed once it is held; a folder this run created and left empty (a refused
    setting) is removed again."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not an output folder; choose another output folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _held(folder / ".lock", f"{folder} is in use by another run"):
            for stale in folder.glob("*.tmp"):  # atomic_write's temporaries: only a killed save leaves one
                stale.unlink(missing_ok=True)
            yield folder
    finally:
        if created and {p.name for p in folder.iterdir()} <= {".lock"}:  # a run refused before any output
            (folder / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextmanager
def run_file(path: str | Path, part: str = "") -> Iterator[Path]:
    """Hold output file `path` (or one `part` of it, a shard that several runs fill side by side) for one
    run, as :func:`run_folder` holds a folder. Temporary files of interrupted saves are removed under
    the file's write lock (:func:`file_lock`), where no other part's save can be in flight."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an output file; choose another output file")
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"{path}" + (f" ({part})" if part else "")
    with _held(Path(f"{path}.run{'.' + part if part else ''}.lock"), f"{what} is being written by another run"):
        with file_lock(path):
            for stale in path.parent.glob(f"{glob_escape(path.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
        yield path
