"""CIFAR-10 loading, the paper's train/val/test split, and a fast in-memory loader.

The dataset is read once per directory into uint8 tensors (N, 3, 32, 32) and kept
in memory; everything after that is plain tensor indexing.  Sources, in order:

1. ``<data_dir>/cifar10.npz`` with keys train_x (N,32,32,3) uint8 HWC RGB,
   train_y (N,) labels 0..9, test_x, test_y;
2. torchvision's layout ``<data_dir>/cifar-10-batches-py`` (optionally downloaded).

``data_dir`` defaults to ``$GHN_DATA_DIR``, then ``~/.cache/ghn_ext/cifar10``.

:class:`TensorLoader` does all augmentation per batch with vectorized torch ops
(4-pixel zero-pad random crop, horizontal flip, cutout) followed by float32
normalization.  Its randomness is counter-based: the permutation of epoch ``e`` and
the augmentation of batch ``(e, i)`` are derived from ``(seed, e, i)`` only, so the
loader state is just ``(seed, epoch, position)`` and a resumed run sees exactly the
batches an uninterrupted one would.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
from ghn_ext.core.checks import InputError

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "NUM_CLASSES", "DatasetError", "CIFAR10Arrays",
    "Split", "Splits", "resolve_data_dir", "load_cifar10", "clear_cache",
    "cifar10_split_indices", "cifar10_splits", "normalize", "network_input", "crop_flip", "cutout_",
    "TensorLoader",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
NUM_CLASSES = 10
NPZ_NAME = "cifar10.npz"
TORCHVISION_DIR = "cifar-10-batches-py"
ENV_VAR = "GHN_DATA_DIR"
_KEYS = ("train_x", "train_y", "test_x", "test_y")


class DatasetError(RuntimeError):
    """The dataset is missing, unreadable or malformed."""


class CIFAR10Arrays(NamedTuple):
    train_x: torch.Tensor  # (N, 3, 32, 32) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor   # (M, 3, 32, 32) uint8
    test_y: torch.Tensor   # (M,) int64


class Split(NamedTuple):
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64

    def head(self, n: int | None) -> "Split":
        """The first ``n`` examples (all of them when ``n`` is None)."""
        return self if n is None else Split(self.images[:n], self.labels[:n])

    def part(self, start: int, stop: int) -> "Split":
        """Examples ``start`` to ``stop`` (exclusive)."""
        return Split(self.images[start:stop], self.labels[start:stop])

    def prepared(self, device: str | torch.device = "cpu") -> "Split":
        """The images normalised once, channels-last on `device` (the layout the networks run in), for
        scoring many networks on the same images: :func:`ghn_ext.workflows.evaluate.network_logits` takes them
        as they are instead of normalising every batch for every network."""
        x = network_input(self.images, device)
        return Split(x.contiguous(memory_format=torch.channels_last), self.labels.to(device))


class Splits(NamedTuple):
    train: Split
    val: Split
    test: Split


# ----------------------------------------------------------------------------- loading

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$GHN_DATA_DIR``, else ``~/.cache/ghn_ext/cifar10``."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or Path.home() / ".cache" / "ghn_ext" / "cifar10"
    return Path(data_dir).expanduser()


_CACHE: dict[str, CIFAR10Arrays] = {}


def clear_cache() -> None:
    """Forget the in-process cache of decoded datasets."""
    _CACHE.clear()


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = False) -> CIFAR10Arrays:
    """Load CIFAR-10 as uint8 CHW image tensors and int64 labels (cached per directory).

    The returned tensors are shared by all callers: do not modify them in place.
    Raises :class:`DatasetError` when the data is missing or malformed.
    """
    root = resolve_data_dir(data_dir)
    key = str(root.resolve())
    if key not in _CACHE:
        if (root / NPZ_NAME).is_file():
            _CACHE[key] = _load_npz(root / NPZ_NAME)
        elif (root / TORCHVISION_DIR).is_dir() or download:
            _CACHE[key] = _load_torchvision(root, download)
        else:
            raise DatasetError(
                f"CIFAR-10 not found in {root}: expected {root / NPZ_NAME} or "
                f"{root / TORCHVISION_DIR}/. Set {ENV_VAR} to a directory holding {NPZ_NAME}, "
                f"place {NPZ_NAME} in {root}, or fetch it with `ghn data download --dir {root}`.")
    return _CACHE[key]


def download_cifar10(data_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Fetch CIFAR-10 with torchvision's downloader into ``data_dir`` (resolved as by
    :func:`resolve_data_dir`) unless it is already there; returns the folder and whether it was fetched.
    A failed download is a :class:`DatasetError` that says where to put the data instead."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder for CIFAR-10")
    present = (root / NPZ_NAME).is_file() or (root / TORCHVISION_DIR).is_dir()
    root.mkdir(parents=True, exist_ok=True)
    load_cifar10(root, download=not present)  # checks what is there, or fetches and checks it
    return root, not present


def _load_npz(path: Path) -> CIFAR10Arrays:
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a plain .npy array
            raise DatasetError(f"{path}: not an npz archive (holds a single {type(npz).__name__})")
        with npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DatasetError(f"{path}: missing keys {missing} (found {sorted(npz.files)})")
            arrays = {k: npz[k] for k in _KEYS}
    except DatasetError:
        raise
    except Exception as err:  # corrupt or truncated archive
        raise DatasetError(f"{path}: cannot read npz archive ({type(err).__name__}: {err})") from err
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.shape[0] == 0:
            raise DatasetError(f"{path}: {split}_x has shape {x.shape}, expected (N, 32, 32, 3)")
        if x.dtype != np.uint8:
            raise DatasetError(f"{path}: {split}_x has dtype {x.dtype}, expected uint8")
        if y.shape != (x.shape[0],):
            raise DatasetError(f"{path}: {split}_y has shape {y.shape}, expected ({x.shape[0]},)")
        if y.dtype.kind not in "iu":
            raise DatasetError(f"{path}: {split}_y has dtype {y.dtype}, expected an integer type")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise DatasetError(f"{path}: {split}_y has labels in [{y.min()}, {y.max()}], "
                               f"expected 0..{NUM_CLASSES - 1}")
    return CIFAR10Arrays(*_to_tensors(arrays["train_x"], arrays["train_y"]),
                         *_to_tensors(arrays["test_x"], arrays["test_y"]))


def _to_tensors(x_hwc: np.ndarray, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(x_hwc)).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(np.asarray(y, dtype=np.int64))


def _load_torchvision(root: Path, download: bool) -> CIFAR10Arrays:
    try:
        from torchvision.datasets import CIFAR10
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as err:
        raise DatasetError(
            f"cannot load CIFAR-10 from {root / TORCHVISION_DIR} (download={download}): "
            f"{type(err).__name__}: {err}. Without network access, set {ENV_VAR} to a "
            f"directory holding {NPZ_NAME} or place {NPZ_NAME} in {root}.") from err
    return CIFAR10Arrays(*_to_tensors(train.data, train.targets), *_to_tensors(test.data, test.targets))


# ----------------------------------------------------------------------------- splits

def cifar10_split_indices(num_train: int = 50_000, val_size: int = 5_000,
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train_idx, val_idx) into the official training set, from a seeded permutation."""
    if not 0 <= val_size < num_train:
        raise InputError(f"val_size must be in [0, {num_train}), got {val_size}")
    perm = np.random.default_rng(seed).permutation(num_train)
    val, train = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return torch.from_numpy(train), torch.from_numpy(val)


def cifar10_splits(data_dir: str | os.PathLike | None = None, val_size: int = 5_000, seed: int = 0,
                   download: bool = False, train_subset: int | None = None,
                   val_subset: int | None = None) -> Splits:
    """The paper's split: 45k train / 5k validation (held out of the training set) / 10k test.

    ``train_subset`` / ``val_subset`` keep only the first n examples of those splits
    (a fixed, seed-determined random subset, since split membership is random).
    """
    data = load_cifar10(data_dir, download)
    train_idx, val_idx = cifar10_split_indices(len(data.train_y), val_size, seed)
    take = lambda idx: Split(data.train_x[idx], data.train_y[idx])  # noqa: E731
    return Splits(take(train_idx).head(train_subset), take(val_idx).head(val_subset),
                  Split(data.test_x, data.test_y))


# ----------------------------------------------------------------------------- batch ops

def network_input(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 images normalised on `device`; images already normalised (:meth:`Split.prepared`) as they are."""
    return normalize(images.to(device)) if images.dtype == torch.uint8 else images.to(device)


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 ``(x / 255 - mean) / std``."""
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int = 4) -> torch.Tensor:
    """Per-sample crop of the zero-padded batch at offsets (dy, dx) in [0, 2 * pad], then flip.

    ``out[b, :, i, j] = P[b, :, dy[b] + i, dx[b] + (W - 1 - j if flip[b] else j)]`` where ``P``
    is ``images`` zero-padded by ``pad`` on every side; one gather does both steps.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)).view(b, c, -1)
    cols = torch.arange(w, device=dev)
    rows = dy.view(-1, 1) + torch.arange(h, device=dev)                        # (B, H)
    cols = dx.view(-1, 1) + torch.where(flip.view(-1, 1), cols.flip(0), cols)  # (B, W)
    flat = rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]                 # (B, H, W)
    return padded.gather(2, flat.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


def cutout_(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, length: int = 16) -> torch.Tensor:
    """Zero, in place, the ``length``-sided square centred at (cy, cx) of each image (clipped
    at the borders): rows ``cy - length // 2 <= i < cy - length // 2 + length``, same for columns."""
    h, w = x.shape[-2:]
    ri = torch.arange(h, device=x.device) - (cy.view(-1, 1) - length // 2)
    ci = torch.arange(w, device=x.device) - (cx.view(-1, 1) - length // 2)
    mask = ((ri >= 0) & (ri < length))[:, :, None] & ((ci >= 0) & (ci < length))[:, None, :]
    return x.masked_fill_(mask[:, None], 0)


# ----------------------------------------------------------------------------- loader

class TensorLoader:
    """Batches ``(normalized float32 images, int64 labels)`` from in-memory uint8 tensors.

    ``for x, y in loader`` runs the rest of the current epoch; :meth:`next_batch` and
    :meth:`batches` stream forever across epochs (for step-based training).  With
    ``shuffle`` every epoch has a new permutation; ``augment`` enables random crop
    (zero padding ``pad``) and horizontal flip; ``cutout > 0`` zeroes a random
    ``cutout``-sided square after normalization (independent of ``augment``).
    ``seed=None`` draws the seed from ``generator`` (or torch's global RNG).

    ``shard=(rank, world)`` makes this one of ``world`` loaders that split every global batch of
    ``batch_size * world`` examples: rank r gets rows ``[r * batch_size, (r + 1) * batch_size)``, with
    the augmentation that batch would get in one process. Positions count global batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128, *,
                 shuffle: bool = False, augment: bool = False, cutout: int = 0, pad: int = 4,
                 drop_last: bool = False, seed: int | None = 0,
                 generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 shard: tuple[int, int] = (0, 1)):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise InputError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.rank, self.world = (int(v) for v in shard)
        if not 0 <= self.rank < self.world:
            raise InputError(f"shard {shard} is not (rank, world) with 0 <= rank < world")
        self.augment, self.cutout, self.pad = augment, int(cutout), int(pad)
        self.mean, self.std = mean, std
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.seed, self.epoch, self.position = int(seed), 0, 0
        self._rng = torch.Generator()
        self._order_epoch, self._order = -1, None
        if len(self) == 0:
            raise InputError(f"no batches: {len(images)} samples, batch_size={batch_size} x {self.world} "
                             f"ranks, drop_last={drop_last}")

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world

    def __len__(self) -> int:
        """Global batches per epoch."""
        n, b = len(self.labels), self.global_batch_size
        return n // b if self.drop_last else -(-n // b)

    def _seeded(self, *words: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed % 2**64, *words]).generate_state(1, np.uint64)[0]
        return self._rng.manual_seed(int(state))

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order_epoch != epoch:
            n = len(self.labels)
            order = (torch.randperm(n, generator=self._seeded(epoch, 0, 0)) if self.shuffle
                     else torch.arange(n))
            self._order, self._order_epoch = order.to(self.device), epoch
        return self._order

    def batch_at(self, epoch: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``position`` of epoch ``epoch`` (a pure function of the seed and options)."""
        gb = self.global_batch_size
        idx = self._epoch_order(epoch)[position * gb:(position + 1) * gb]
        b, (h, w) = len(idx), self.images.shape[2:]
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)  # this rank's rows
        idx = idx[mine]
        x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
        g = self._seeded(epoch, 1, position)
        if self.augment:  # drawn for the whole global batch, so a shard's rows match the single loader's
            dy, dx = (torch.randint(0, 2 * self.pad + 1, (b,), generator=g)[mine] for _ in range(2))
            flip = torch.randint(0, 2, (b,), generator=g).bool()[mine]
            x = crop_flip(x, dy.to(self.device), dx.to(self.device), flip.to(self.device), self.pad)
        x = normalize(x, self.mean, self.std)
        if self.cutout > 0:
            cy, cx = torch.randint(0, h, (b,), generator=g)[mine], torch.randint(0, w, (b,), generator=g)[mine]
            cutout_(x, cy.to(self.device), cx.to(self.device), self.cutout)
        return x, y

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch, rolling over into a new epoch after the last one."""
        batch = self.batch_at(self.epoch, self.position)
        self.position += 1
        if self.position == len(self):
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch()

    def batches(self, num: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``num`` batches (forever when None), continuing across epochs."""
        step = 0
        while num is None or step < num:
            yield self.next_batch()
            step += 1

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "num_samples": len(self.labels), "batch_size": self.global_batch_size}

    def load_state_dict(self, state: dict, rescale: bool = False) -> None:
        """Resume from :meth:`state_dict`. The data size must match, and so must the global batch size
        unless `rescale` (a run resumed on another number of ranks): then the position moves to the
        first batch of the current epoch none of whose examples were seen yet."""
        if state["num_samples"] != len(self.labels):
            raise InputError(f"loader state has num_samples={state['num_samples']}, this loader has "
                             f"{len(self.labels)}")
        position = int(state["position"])
        if state["batch_size"] != self.global_batch_size:
            if not rescale:
                raise InputError(f"loader state has batch_size={state['batch_size']}, this loader has "
                                 f"{self.global_batch_size}")
            position = -(-position * int(state["batch_size"]) // self.global_batch_size)
        epoch = int(state["epoch"])
        if position >= len(self) and rescale:
            epoch, position = epoch + 1, 0
        if not 0 <= position < len(self):
            raise InputError(f"loader state position {state['position']} out of range")
        self.seed, self.epoch, self.position = int(state["seed"]), epoch, position
        self._order_epoch = -1  # the seed may have changed: recompute the permutation
