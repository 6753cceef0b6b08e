"""Tests for ghn_ext.core.data: CIFAR-10 loading, splits and the in-memory TensorLoader.

Uses the real CIFAR-10 from $GHN_DATA_DIR, else <root>/shared/data/cifar10 next to the
repository (<root>/main); never downloads.
"""
import os
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ghn_ext.core import data as D  # noqa: E402

FALLBACK_DIR = Path(__file__).resolve().parents[2] / "shared/data/cifar10"


@pytest.fixture(scope="module")
def data_dir():
    env = os.environ.get("GHN_DATA_DIR")
    if env:  # explicitly configured (CI): a missing file is a failure, not a skip
        assert (Path(env) / "cifar10.npz").is_file(), f"GHN_DATA_DIR={env} has no cifar10.npz"
        return Path(env)
    if not (FALLBACK_DIR / "cifar10.npz").is_file():
        pytest.skip(f"CIFAR-10 not found (set GHN_DATA_DIR or place it at {FALLBACK_DIR})")
    return FALLBACK_DIR


@pytest.fixture(scope="module")
def cifar(data_dir):
    return D.load_cifar10(data_dir)


@pytest.fixture(scope="module")
def splits(data_dir):
    return D.cifar10_splits(data_dir)


def tiny_arrays(n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return dict(train_x=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                train_y=rng.integers(0, 10, n_train).astype(np.uint8),
                test_x=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                test_y=rng.integers(0, 10, n_test).astype(np.uint8))


def ids_loader(n=50, **kw):
    """A loader whose labels are the sample ids, so batches can be traced back to samples."""
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return images, D.TensorLoader(images, torch.arange(n), **kw)


def same_batches(a, b):
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


# ----------------------------------------------------------------------------- loading

def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GHN_DATA_DIR", str(tmp_path / "env"))
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert D.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("GHN_DATA_DIR")
    assert D.resolve_data_dir() == Path.home() / ".cache/ghn_ext/cifar10"


def test_load_real_cifar10(cifar, data_dir):
    assert cifar.train_x.shape == (50000, 3, 32, 32) and cifar.train_x.dtype == torch.uint8
    assert cifar.test_x.shape == (10000, 3, 32, 32) and cifar.test_x.dtype == torch.uint8
    assert cifar.train_y.dtype == torch.int64 and cifar.test_y.dtype == torch.int64
    assert cifar.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official order
    assert cifar.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert 0 <= int(cifar.train_y.min()) and int(cifar.train_y.max()) <= 9
    assert torch.bincount(cifar.test_y, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(cifar.train_y, minlength=10).tolist() == [5000] * 10
    assert D.load_cifar10(data_dir) is cifar  # cached in-process


def test_npz_is_converted_hwc_to_chw(tmp_path):
    arrays = tiny_arrays()
    np.savez(tmp_path / "cifar10.npz", **arrays)
    got = D.load_cifar10(tmp_path)
    assert got.train_x.shape == (20, 3, 32, 32) and got.test_x.shape == (10, 3, 32, 32)
    assert torch.equal(got.train_x, torch.from_numpy(arrays["train_x"]).permute(0, 3, 1, 2))
    assert got.test_y.tolist() == arrays["test_y"].tolist()


def test_missing_dir_names_the_path(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(D.DatasetError, match="GHN_DATA_DIR") as err:
        D.load_cifar10(missing)
    assert str(missing) in str(err.value) and "download" in str(err.value)


def test_garbage_npz(tmp_path):
    (tmp_path / "cifar10.npz").write_bytes(os.urandom(4096))
    with pytest.raises(D.DatasetError) as err:
        D.load_cifar10(tmp_path)
    assert str(tmp_path / "cifar10.npz") in str(err.value)


def test_truncated_npz(tmp_path, data_dir):
    with open(data_dir / "cifar10.npz", "rb") as f:
        (tmp_path / "cifar10.npz").write_bytes(f.read(1 << 20))
    with pytest.raises(D.DatasetError, match="cannot read npz"):
        D.load_cifar10(tmp_path)


def test_npy_instead_of_npz(tmp_path):
    with open(tmp_path / "cifar10.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(D.DatasetError, match="not an npz"):
        D.load_cifar10(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("test_y"), "missing keys"),
    (lambda a: a.update(train_x=a["train_x"][..., :1]), r"train_x has shape"),
    (lambda a: a.update(test_x=a["test_x"].transpose(0, 3, 1, 2)), r"test_x has shape"),
    (lambda a: a.update(train_x=a["train_x"].astype(np.float32)), "train_x has dtype"),
    (lambda a: a.update(train_y=a["train_y"][:-1]), "train_y has shape"),
    (lambda a: a.update(test_y=a["test_y"].astype(np.float32)), "test_y has dtype"),
    (lambda a: a["train_y"].__setitem__(3, 10), "labels in"),
])
def test_malformed_npz(tmp_path, change, message):
    arrays = tiny_arrays()
    change(arrays)
    np.savez(tmp_path / "cifar10.npz", **arrays)
    with pytest.raises(D.DatasetError, match=message) as err:
        D.load_cifar10(tmp_path)
    assert str(tmp_path / "cifar10.npz") in str(err.value)


def test_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets

    arrays = tiny_arrays()

    class FakeCIFAR10:  # stands in for the real class, which would verify md5 sums
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and not download
            s = "train" if train else "test"
            self.data, self.targets = arrays[f"{s}_x"], arrays[f"{s}_y"].tolist()

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    got = D.load_cifar10(tmp_path)
    assert torch.equal(got.test_x, torch.from_numpy(arrays["test_x"]).permute(0, 3, 1, 2))
    assert got.train_y.dtype == torch.int64 and got.train_y.tolist() == arrays["train_y"].tolist()


def test_failed_download(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, train, download):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(D.DatasetError, match="GHN_DATA_DIR") as err:
        D.load_cifar10(tmp_path / "dl", download=True)
    assert str(tmp_path / "dl") in str(err.value) and "no network" in str(err.value)


# ----------------------------------------------------------------------------- splits

def test_split_sizes(splits):
    assert [len(s.labels) for s in splits] == [45000, 5000, 10000]
    for s in splits:
        assert s.images.shape[1:] == (3, 32, 32) and s.images.dtype == torch.uint8
        assert s.labels.dtype == torch.int64 and len(s.images) == len(s.labels)


def test_split_indices_disjoint_and_deterministic(cifar, splits):
    train_idx, val_idx = D.cifar10_split_indices(50000, 5000, seed=0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(50000))
    assert torch.equal(splits.val.images, cifar.train_x[val_idx])
    assert torch.equal(splits.train.labels, cifar.train_y[train_idx])
    assert torch.equal(splits.test.images, cifar.test_x)
    assert torch.equal(val_idx, D.cifar10_split_indices(50000, 5000, seed=0)[1])
    assert not torch.equal(val_idx, D.cifar10_split_indices(50000, 5000, seed=1)[1])
    # every class is represented in the validation split
    assert torch.bincount(splits.val.labels, minlength=10).min() > 400


def test_split_subsets(data_dir, splits):
    small = D.cifar10_splits(data_dir, train_subset=1000, val_subset=500)
    assert len(small.train.labels) == 1000 and len(small.val.labels) == 500
    assert torch.equal(small.val.images, splits.val.images[:500])
    assert torch.equal(splits.train.head(7).labels, splits.train.labels[:7])
    other = D.cifar10_splits(data_dir, seed=1, val_subset=500)
    assert not torch.equal(other.val.labels, small.val.labels)
    with pytest.raises(ValueError):
        D.cifar10_split_indices(100, 100)


# ----------------------------------------------------------------------------- batch ops

def test_crop_with_known_offsets():
    img = torch.arange(1, 3 * 32 * 32 + 1).remainder(255).add(1).to(torch.uint8).view(1, 3, 32, 32)
    crop = lambda dy, dx, flip=False: D.crop_flip(  # noqa: E731
        img, torch.tensor([dy]), torch.tensor([dx]), torch.tensor([flip]), pad=4)
    assert torch.equal(crop(4, 4), img)  # centred crop is the identity
    out = crop(0, 8)  # image moved down 4 rows and left 4 columns
    assert torch.equal(out[..., 4:, :28], img[..., :28, 4:])
    assert out[..., :4, :].eq(0).all() and out[..., :, 28:].eq(0).all()
    out = crop(7, 2)  # up 3, right 2
    assert torch.equal(out[..., :29, 2:], img[..., 3:, :30])
    assert out[..., 29:, :].eq(0).all() and out[..., :, :2].eq(0).all()


def test_crop_flip_matches_reference_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    dy, dx = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g).bool()
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    expect = torch.stack([padded[b, :, dy[b]:dy[b] + 32, dx[b]:dx[b] + 32] for b in range(16)])
    expect = torch.where(flip.view(-1, 1, 1, 1), expect.flip(-1), expect)
    assert torch.equal(D.crop_flip(x, dy, dx, flip), expect)


def test_flip():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = D.crop_flip(x, torch.tensor([4, 4]), torch.tensor([4, 4]), torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert torch.equal(out[0, :, :, 0], x[0, :, :, 31])


def test_cutout_zeroes_a_square():
    x = torch.ones(3, 3, 32, 32)
    D.cutout_(x, torch.tensor([16, 0, 31]), torch.tensor([10, 0, 20]), length=16)
    assert x[0, :, 8:24, 2:18].eq(0).all() and x[0].eq(0).sum() == 3 * 16 * 16
    assert x[1, :, :8, :8].eq(0).all() and x[1].eq(0).sum() == 3 * 8 * 8  # clipped at corner
    assert x[2, :, 23:, 12:28].eq(0).all() and x[2].eq(0).sum() == 3 * 9 * 16


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = D.normalize(x)
    assert out.dtype == torch.float32
    for c in range(3):
        m, s = D.CIFAR10_MEAN[c], D.CIFAR10_STD[c]
        assert torch.allclose(out[0, c, 0], torch.tensor([-m / s, (1 - m) / s]), atol=1e-5)


# ----------------------------------------------------------------------------- loader

def test_loader_shapes_and_len():
    _, loader = ids_loader(50, batch_size=16)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.cat([y for _, y in batches]).tolist() == list(range(50))  # no shuffle: in order
    _, loader = ids_loader(50, batch_size=16, drop_last=True, shuffle=True)
    assert len(loader) == 3 and [len(y) for _, y in loader] == [16] * 3
    with pytest.raises(ValueError):
        ids_loader(10, batch_size=16, drop_last=True)


def test_shuffle_visits_each_sample_once_per_epoch():
    _, loader = ids_loader(50, batch_size=16, shuffle=True, seed=3)
    epochs = [torch.cat([y for _, y in loader]) for _ in range(3)]
    for ids in epochs:
        assert sorted(ids.tolist()) == list(range(50))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[0], torch.arange(50))
    assert loader.epoch == 3 and loader.position == 0


def test_unaugmented_batches_are_normalized_images():
    images, loader = ids_loader(20, batch_size=8, shuffle=True)
    for x, y in loader:
        assert torch.equal(x, D.normalize(images[y]))


def test_normalized_train_statistics(splits):
    loader = D.TensorLoader(*splits.train, batch_size=5000)
    total, sq, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for x, _ in loader:
        x = x.double()
        total += x.sum((0, 2, 3))
        sq += x.pow(2).sum((0, 2, 3))
        count += x.numel() // 3
    mean = total / count
    std = (sq / count - mean ** 2).sqrt()
    assert mean.abs().max() < 0.02, mean
    assert (std - 1).abs().max() < 0.02, std


def test_augmented_batches_are_shifted_flipped_copies():
    images, loader = ids_loader(64, batch_size=64, shuffle=True, augment=True, seed=5)
    x, ids = next(iter(loader))
    assert x.shape == (64, 3, 32, 32)
    assert not torch.equal(x, D.normalize(images[ids]))
    src = images[ids]
    offsets, flips = set(), []
    for b in range(64):  # find the (dy, dx, flip) that reproduces the output exactly
        found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                 if torch.equal(x[b:b + 1], D.normalize(D.crop_flip(
                     src[b:b + 1], torch.tensor([dy]), torch.tensor([dx]), torch.tensor([f]))))]
        assert found, f"sample {b} is not a crop/flip of its source image"
        offsets.add(found[0][:2])
        flips.append(found[0][2])
    assert len(offsets) > 20 and 10 < sum(flips) < 54


def test_cutout_in_loader():
    images = torch.full((32, 3, 32, 32), 255, dtype=torch.uint8)
    loader = D.TensorLoader(images, torch.zeros(32), batch_size=32, cutout=16, seed=0)
    x, _ = loader.next_batch()
    zero = x.eq(0)
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])
    for mask in zero[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert mask.sum() == len(rows) * len(cols)  # a filled rectangle
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)


def test_same_seed_same_batches():
    kw = dict(batch_size=16, shuffle=True, augment=True, cutout=8)
    a, b = ids_loader(50, seed=7, **kw)[1], ids_loader(50, seed=7, **kw)[1]
    assert same_batches(a.batches(12), b.batches(12))
    c = ids_loader(50, seed=8, **kw)[1]
    a2 = ids_loader(50, seed=7, **kw)[1]
    assert not same_batches(a2.batches(4), c.batches(4))


def test_seed_from_generator():
    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    make = lambda s: D.TensorLoader(images, torch.arange(20), 8, shuffle=True, seed=None,  # noqa: E731
                                    generator=torch.Generator().manual_seed(s))
    assert make(1).seed == make(1).seed != make(2).seed


@pytest.mark.parametrize("k", [0, 3, 4, 9])  # 4 batches per epoch: resume mid- and at epoch edges
def test_exact_resume_from_state_dict(k):
    kw = dict(batch_size=16, shuffle=True, augment=True, cutout=16)
    _, uninterrupted = ids_loader(50, seed=11, **kw)
    expected = list(uninterrupted.batches(k + 6))[k:]

    _, first = ids_loader(50, seed=11, **kw)
    for _ in first.batches(k):
        pass
    state = first.state_dict()
    _, resumed = ids_loader(50, seed=999, **kw)  # seed comes from the state
    resumed.load_state_dict(state)
    assert same_batches(resumed.batches(6), expected)


def test_resume_after_partial_epoch_iteration():
    _, a = ids_loader(50, batch_size=16, shuffle=True, augment=True)
    for i, _ in enumerate(a):
        if i == 1:
            break
    assert (a.epoch, a.position) == (0, 2)
    _, b = ids_loader(50, batch_size=16, shuffle=True, augment=True, seed=4)
    b.load_state_dict(a.state_dict())
    assert same_batches(list(a), list(b)) and len(list(b)) == 4


def test_load_state_dict_rejects_mismatch():
    _, a = ids_loader(50, batch_size=16)
    _, b = ids_loader(40, batch_size=16)
    with pytest.raises(ValueError, match="num_samples"):
        b.load_state_dict(a.state_dict())


def test_augmented_epoch_smoke(splits):
    """Not timed: one augmented epoch over a 5k subset runs and covers every sample."""
    train = splits.train.head(5000)
    loader = D.TensorLoader(*train, batch_size=256, shuffle=True, augment=True, cutout=16, seed=0)
    seen = 0
    for x, y in loader:
        assert torch.isfinite(x).all()
        seen += len(y)
    assert seen == 5000
