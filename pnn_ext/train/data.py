"""Datasets as in-memory tensors: digits (scikit-learn, offline), MNIST and
Fashion-MNIST (original idx files from --data-dir, else torchvision's download),
CIFAR-10/100 (torchvision), and npz:PATH for any arrays.

Every set ends up as float32 tensors with a layout the models understand:
``image`` (N, C, H, W), ``sequence`` (N, C, T) or ``features`` (N, F);
normalised with statistics of the training split only."""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

LAYOUTS = ("auto", "image", "sequence", "features")

# Base names of the original files; each may be stored gzipped (.gz) or not.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class DataError(ValueError):
    """A dataset that cannot be loaded as asked (missing file, wrong keys, bad shapes)."""


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data (saved in checkpoints, returned by load_run)."""
    name: str                   # the dataset setting: digits, mnist, ..., npz:PATH
    layout: str                 # "image" | "sequence" | "features"
    in_shape: tuple[int, ...]   # shape of one sample
    num_classes: int


@dataclass
class Data:
    name: str
    layout: str                 # "image" | "sequence" | "features"
    in_shape: tuple[int, ...]   # shape of one sample
    num_classes: int
    train: TensorDataset
    val: TensorDataset | None
    test: TensorDataset
    augment: bool               # random crop + flip on training batches (images only)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.name, self.layout, tuple(self.in_shape), self.num_classes)


# ---------------------------------------------------------------- raw arrays

def read_idx(path: str) -> np.ndarray:
    """One idx file (gzipped or not) of unsigned bytes, as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream inside a .gz
        raise DataError(f"cannot read idx file {path}: {type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header is incomplete")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims} ({int(np.prod(dims))} bytes), "
                        f"found {body.size}")
    return body.reshape(dims)


def _find_idx(data_dir: str, dataset: str) -> dict[str, str] | None:
    """Paths of the four idx files under data_dir (or data_dir/raw, data_dir/MNIST/raw ...)."""
    folder = TORCHVISION_FOLDER[dataset]
    for d in (data_dir, os.path.join(data_dir, "raw"), os.path.join(data_dir, folder, "raw")):
        found = {}
        for split, names in IDX_FILES.items():
            for kind, base in zip(("x", "y"), names):
                for name in (base, base + ".gz"):
                    if os.path.isfile(os.path.join(d, name)):
                        found[f"{kind}_{split}"] = os.path.join(d, name)
        if len(found) == 4:
            return found
    return None


def _mnist_like(dataset: str, data_dir: str):
    paths = _find_idx(data_dir, dataset)
    if paths is not None:
        return {k: read_idx(p) for k, p in paths.items()}
    import torchvision
    cls = torchvision.datasets.MNIST if dataset == "mnist" else torchvision.datasets.FashionMNIST
    try:
        tr, te = (cls(data_dir, train=t, download=True) for t in (True, False))
    except Exception as e:  # no network: say where the files should be
        raise DataError(
            f"{dataset}: the original idx files (train-images-idx3-ubyte[.gz], ...) are not in "
            f"{data_dir!r}, {data_dir}/raw or {data_dir}/{TORCHVISION_FOLDER[dataset]}/raw, and the download "
            f"failed ({type(e).__name__}: {e}). Pass --data-dir with the files.") from None
    return {"x_train": tr.data.numpy(), "y_train": tr.targets.numpy(),
            "x_test": te.data.numpy(), "y_test": te.targets.numpy()}


def _cifar(dataset: str, data_dir: str):
    import torchvision
    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:  # an archive already in data_dir is checked and extracted, not downloaded
        tr, te = (cls(data_dir, train=t, download=True) for t in (True, False))
    except Exception as e:
        raise DataError(f"{dataset}: not found in {data_dir!r} and the download failed "
                        f"({type(e).__name__}: {e}). Put {cls.filename} there.") from None
    to_chw = lambda a: np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))  # noqa: E731
    return {"x_train": to_chw(tr.data), "y_train": np.asarray(tr.targets),
            "x_test": to_chw(te.data), "y_test": np.asarray(te.targets)}


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    # The test split is fixed (random_state=0) so runs with different seeds share it.
    x_tr, x_te, y_tr, y_te = train_test_split(d.images, d.target, test_size=0.25, random_state=0,
                                              stratify=d.target)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _npz(path: str):
    if not os.path.isfile(path):
        raise DataError(f"npz file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            need = ["x_train", "y_train", "x_test", "y_test"]
            missing = [k for k in need if k not in keys]
            if missing:
                raise DataError(f"npz file {path!r} lacks keys {missing} (it has {sorted(keys)}); "
                                f"it needs x_train, y_train, x_test, y_test")
            return {k: z[k] for k in need}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read npz file {path!r}: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------- checks, layout

def _labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{key} must be 1-D class indices, got shape {y.shape}")
    if y.shape[0] != n:
        raise DataError(f"{key} has {y.shape[0]} labels but x_{key[2:]} has {n} samples")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise DataError(f"{key} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{key} has a negative label ({y.min()})")
    return y


def _counted(labels: dict[str, np.ndarray], values) -> str:
    """'255 (1 in y_train), 300 (2 in y_test)' for the given label values."""
    parts = []
    for v in values:
        where = ", ".join(f"{int((y == v).sum())} in {key}" for key, y in labels.items() if (y == v).any())
        parts.append(f"{int(v)} ({where})")
    shown = parts[:5] + ([f"... {len(parts) - 5} more"] if len(parts) > 5 else [])
    return ", ".join(shown)


def num_classes_of(labels: dict[str, np.ndarray], num_classes: int = 0) -> int:
    """K, the number of classes, for labels that must be 0..K-1. With ``num_classes``
    given a label outside it is an error; without it K is one more than the largest
    label, and a class below that without any sample is an error naming the labels past
    the gap (one stray label 255 must not make a 256-class model)."""
    every = np.concatenate([y for y in labels.values()])
    if num_classes == 1 or (not num_classes and every.size and int(every.max()) == 0):
        # one class: every prediction is right, and "test accuracy 100.00%" would mean nothing
        raise DataError(f"labels hold a single class ({_counted(labels, np.unique(every))}): a classifier needs "
                        f"two or more; pass --num-classes K (K >= 2) if the data is a part of K classes")
    if num_classes:
        outside = np.unique(every[every >= num_classes])
        if outside.size:
            raise DataError(f"labels must be 0..{num_classes - 1} (num_classes {num_classes}); found "
                            f"{_counted(labels, outside)}")
        return num_classes
    present = np.unique(every)
    k = int(present.max()) + 1
    if present.size != k:
        gap = int(np.setdiff1d(np.arange(k), present)[0])
        strays = present[present > gap]
        raise DataError(f"labels must be 0..K-1 with a sample of every class, but class {gap} has none and "
                        f"larger labels occur: {_counted(labels, strays)}; pass --num-classes K if the classes "
                        f"are 0..K-1 and some have no sample")
    return k


def _as_float32(x: np.ndarray, key: str) -> torch.Tensor:
    """``x`` as float32, refusing what the cast would change silently: complex values
    (the imaginary part would be dropped), NaN or inf, and finite values past float32's
    range (they would become inf)."""
    if np.iscomplexobj(x):
        raise DataError(f"{key} is complex (dtype {x.dtype}); inputs must be real numbers")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            raise DataError(f"{key} contains NaN or inf ({int(bad.sum())} values)")
    with np.errstate(over="ignore"):  # the overflow is reported below, by name, not as a numpy warning
        out = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(out).all():
        big = float(np.abs(x).max())
        raise DataError(f"{key} overflows in the cast to float32: its largest magnitude {big:.3g} is beyond "
                        f"float32's {float(np.finfo(np.float32).max):.3g}; rescale the data")
    return torch.as_tensor(out)


def _layout(x: np.ndarray, requested: str, key: str) -> str:
    if x.ndim == 4:
        layout = "image"
    elif x.ndim == 3:
        layout = "sequence" if requested == "sequence" else "image"
    elif x.ndim == 2:
        layout = "features"
    else:
        raise DataError(f"{key} must be N×C×H×W, N×H×W (images), N×C×T (sequences, with --layout sequence) "
                        f"or N×F (features), got shape {x.shape}")
    if requested not in ("auto", layout):
        raise DataError(f"{key} of shape {x.shape} cannot be read as layout {requested!r}")
    return layout


def load_arrays(dataset: str, data_dir: str) -> dict[str, np.ndarray]:
    if dataset == "digits":
        return _digits()
    if dataset in TORCHVISION_FOLDER:
        return _mnist_like(dataset, data_dir)
    if dataset in ("cifar10", "cifar100"):
        return _cifar(dataset, data_dir)
    if dataset.startswith("npz:"):
        return _npz(dataset[4:])
    raise DataError(f"dataset must be digits, mnist, fashion-mnist, cifar10, cifar100 or npz:PATH, got {dataset!r}")


def prepare(arrays: dict[str, np.ndarray], *, name: str, layout: str = "auto", val_fraction: float = 0.1,
            train_subset: int = 0, augment: str = "auto", seed: int = 0, num_classes: int = 0) -> Data:
    """Check shapes and labels, split off validation, normalise with training statistics."""
    if layout not in LAYOUTS:
        raise DataError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    x_tr, x_te = np.asarray(arrays["x_train"]), np.asarray(arrays["x_test"])
    for key, x in (("x_train", x_tr), ("x_test", x_te)):
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DataError(f"{key} must be numeric, got dtype {x.dtype}")
    kind = _layout(x_tr, layout, "x_train")
    if x_te.shape[1:] != x_tr.shape[1:]:
        raise DataError(f"x_test samples have shape {x_te.shape[1:]}, x_train samples {x_tr.shape[1:]}")
    if 0 in x_tr.shape[1:]:
        raise DataError(f"x_train samples have shape {x_tr.shape[1:]}: no values to learn from")
    y_tr, y_te = _labels(arrays["y_train"], "y_train", len(x_tr)), _labels(arrays["y_test"], "y_test", len(x_te))
    if len(x_tr) < 2:
        raise DataError(f"x_train needs at least 2 samples, got {len(x_tr)}")
    if len(x_te) == 0:
        raise DataError("x_test has no samples: the test set must not be empty")
    num_classes = num_classes_of({"y_train": y_tr, "y_test": y_te}, num_classes)
    x_tr, x_te = _as_float32(x_tr, "x_train"), _as_float32(x_te, "x_test")
    if kind == "image" and x_tr.dim() == 3:  # N×H×W: one channel
        x_tr, x_te = x_tr.unsqueeze(1), x_te.unsqueeze(1)
    y_tr, y_te = torch.as_tensor(y_tr), torch.as_tensor(y_te)

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x_tr), generator=g)
    n_val = int(round(val_fraction * len(x_tr)))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    if train_subset:
        tr_idx = tr_idx[:train_subset]
    if len(tr_idx) < 2:
        raise DataError(f"{name}: {len(tr_idx)} training sample(s) left after the validation split "
                        f"(val_fraction {val_fraction}, train_subset {train_subset}); at least 2 are needed")
    x_val, y_val = x_tr[val_idx], y_tr[val_idx]
    x_tr, y_tr = x_tr[tr_idx], y_tr[tr_idx]

    # Per channel for images and sequences, per feature for features. A (nearly)
    # constant channel or feature must not turn small test deviations into huge
    # inputs: its std is floored at 10 % of the typical std.
    dims = [0] + list(range(2, x_tr.dim())) if kind != "features" else [0]
    mean = x_tr.mean(dims, keepdim=True)
    std = x_tr.std(dims, keepdim=True)
    std = std.clamp_min(0.1 * float(std.mean()) + 1e-12)
    norm = lambda x: ((x - mean) / std).contiguous()  # noqa: E731
    use_aug = {"on": True, "off": False, "auto": name.startswith("cifar")}[augment]
    if use_aug and kind != "image":
        raise DataError(f"augment applies to images; {name} has layout {kind}")
    return Data(name=name, layout=kind, in_shape=tuple(x_tr.shape[1:]), num_classes=num_classes,
                train=TensorDataset(norm(x_tr), y_tr),
                val=TensorDataset(norm(x_val), y_val) if n_val else None,
                test=TensorDataset(norm(x_te), y_te), augment=use_aug)


def load(cfg, arrays: dict[str, np.ndarray] | None = None) -> Data:
    """The dataset a TrainConfig asks for (from ``arrays`` when given: pnn-sweep reads
    them once per worker process)."""
    if arrays is None:
        arrays = load_arrays(cfg.dataset, cfg.data_dir)
    layout = cfg.layout
    if layout == "auto" and cfg.model == "cnn1d" and np.ndim(arrays["x_train"]) == 3:
        # images N×H×W read row by row ("sequential MNIST"): T = H rows of C = W pixels
        arrays = {**arrays, **{k: np.swapaxes(arrays[k], 1, 2) for k in ("x_train", "x_test")}}
        layout = "sequence"
    return prepare(arrays, name=cfg.dataset, layout=layout, val_fraction=cfg.val_fraction,
                   train_subset=cfg.train_subset, augment=cfg.augment, seed=cfg.seed,
                   num_classes=cfg.num_classes)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding of ``pad``; zero is the mean after normalisation)
    and random horizontal flip, per sample, on a batch (N, C, H, W) on any device."""
    n, c, h, w = x.shape
    dev = x.device
    shift = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(dev)
    flip = torch.randint(0, 2, (n,), generator=generator).bool().to(dev)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = shift[0, :, None] + torch.arange(h, device=dev)                 # (N, H)
    cols = shift[1, :, None] + torch.arange(w, device=dev)                 # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
