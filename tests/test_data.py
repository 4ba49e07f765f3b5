"""Datasets: MNIST idx files (no download), npz inputs and their errors, layouts,
normalisation, augmentation."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from pnn_ext.train import data
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.data import DataError
from testing import run

# Real MNIST (the four original idx files) for the one test that reads it: $PNN_DATA.
MNIST_DIR = os.environ.get("PNN_DATA", "")


def _write_idx(path, array):
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(directory, n_train=200, n_test=50):
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        images[np.arange(n), labels * 2, :] = 255                # a learnable mark
        _write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        _write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)


def test_mnist_from_gzipped_idx_files_without_download(tmp_path, monkeypatch):
    import torchvision
    monkeypatch.setattr(torchvision.datasets, "MNIST", None)   # any download attempt would fail
    _fake_mnist(tmp_path / "MNIST" / "raw")
    summary, trainer = run(tmp_path, dataset="mnist", data_dir=str(tmp_path), epochs=1, max_steps=2)
    assert summary["steps"] == 2 and trainer.data.in_shape == (1, 28, 28) and len(trainer.data.test) == 50


@pytest.mark.skipif(not MNIST_DIR or not os.path.isdir(os.path.join(MNIST_DIR, "MNIST", "raw")),
                    reason="no local MNIST (set PNN_DATA)")
def test_real_mnist_idx_files():
    arrays = data.load_arrays("mnist", MNIST_DIR)
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_test"].shape == (10000, 28, 28)
    assert set(np.unique(arrays["y_train"])) == set(range(10))


def test_mnist_missing_files_and_no_network_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="not in .*Pass --data-dir"):
        data.load_arrays("mnist", str(tmp_path))


def test_truncated_idx_file(tmp_path):
    _fake_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(DataError, match="truncated"):
        data.load_arrays("mnist", str(tmp_path))


def _npz(tmp_path, **arrays):
    base = dict(x_train=np.random.rand(40, 6).astype(np.float32), y_train=np.arange(40) % 3,
                x_test=np.random.rand(10, 6).astype(np.float32), y_test=np.arange(10) % 3)
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = tmp_path / "d.npz"
    np.savez(path, **base)
    return f"npz:{path}"


@pytest.mark.parametrize("arrays, message", [
    (dict(y_test=None), r"lacks keys \['y_test'\]"),
    (dict(y_train=np.arange(39) % 3), "y_train has 39 labels but x_train has 40 samples"),
    (dict(y_train=(np.arange(40) % 3)[:, None]), "y_train must be 1-D"),
    (dict(y_train=np.full(40, 0.5)), "y_train must hold integer class indices"),
    (dict(y_test=-np.ones(10, int)), "y_test has a negative label"),
    (dict(x_test=np.random.rand(10, 5)), r"x_test samples have shape \(5,\), x_train samples \(6,\)"),
    (dict(x_train=np.random.rand(40)), "x_train must be"),
    (dict(x_train=np.full((40, 6), np.nan)), "NaN or inf"),
])
def test_npz_errors(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        data.load(TrainConfig(dataset=_npz(tmp_path, **arrays)))


def test_a_single_class_is_refused_unless_num_classes_says_more(tmp_path):
    """Labels all 0 would train to "test accuracy 100.00%": refused, naming --num-classes."""
    ds = _npz(tmp_path, y_train=np.zeros(40, int), y_test=np.zeros(10, int))
    with pytest.raises(DataError, match=r"single class \(0 \(40 in y_train, 10 in y_test\)\).*--num-classes K"):
        data.load(TrainConfig(dataset=ds))
    with pytest.raises(DataError, match="single class"):
        data.load(TrainConfig(dataset=ds, num_classes=1))
    assert data.load(TrainConfig(dataset=ds, num_classes=2)).num_classes == 2


def test_too_few_training_samples_after_the_split(tmp_path):
    ds = _npz(tmp_path, x_train=np.random.rand(2, 6), y_train=np.arange(2))
    with pytest.raises(DataError, match="1 training sample"):
        data.load(TrainConfig(dataset=ds, val_fraction=0.5))


def test_npz_missing_file_and_not_an_npz(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(TrainConfig(dataset=f"npz:{tmp_path / 'none.npz'}"))
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read npz"):
        data.load(TrainConfig(dataset=f"npz:{tmp_path / 'x.npz'}"))


@pytest.mark.parametrize("shape, layout, kind, in_shape", [
    ((40, 6), "auto", "features", (6,)),
    ((40, 7, 5), "auto", "image", (1, 7, 5)),
    ((40, 2, 9), "sequence", "sequence", (2, 9)),
    ((40, 3, 8, 8), "auto", "image", (3, 8, 8)),
])
def test_npz_layouts_train(tmp_path, shape, layout, kind, in_shape):
    rng = np.random.default_rng(0)
    ds = _npz(tmp_path, x_train=rng.random(shape), x_test=rng.random((10, *shape[1:])))
    summary, trainer = run(tmp_path, dataset=ds, layout=layout, model="mlp", hidden="16,8", epochs=1,
                           batch_size=8, val_fraction=0.2)
    assert trainer.data.layout == kind and trainer.data.in_shape == in_shape
    assert trainer.data.num_classes == 3 and summary["status"] == "completed"
    assert len(trainer.data.val) == 8 and len(trainer.data.train) == 32


def test_normalisation_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(5, 2, (500, 4)), y_train=np.arange(500) % 2,
                  x_test=rng.normal(50, 2, (100, 4)), y_test=np.arange(100) % 2)
    d = data.prepare(arrays, name="t", val_fraction=0.2)
    x_tr = d.train.tensors[0]
    assert x_tr.mean(0).abs().max() < 1e-5 and (x_tr.std(0) - 1).abs().max() < 1e-5
    assert d.test.tensors[0].mean() > 15                       # not re-centred on its own statistics


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = data.augment_batch(x, g, pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):   # each output is a window of the padded image, maybe mirrored
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_augment_batch_changes_the_input_reproducibly():
    """With a seed the batch is moved: of 64 samples, the ones drawn unshifted and unflipped
    (1/50 each, at pad 2) stay, the others change; the same seed draws the same batch."""
    x = torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    out = data.augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    changed = [not torch.equal(out[i], x[i]) for i in range(64)]
    assert sum(changed) >= 56
    assert torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(0), pad=2))
    assert not torch.equal(out, data.augment_batch(x, torch.Generator().manual_seed(1), pad=2))
    # Both flips are drawn: some outputs are mirror images of a window, some are not.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    mirrored = [any(torch.equal(out[i], padded[i, :, r:r + 6, c:c + 6].flip(-1)) for r in range(5) for c in range(5))
                for i in range(64)]
    assert 10 <= sum(mirrored) <= 54
