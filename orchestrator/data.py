"""CIFAR-10/100 from a user-chosen data directory, in the standard python-pickle layouts.

Files are validated by content (shapes, dtype, label range, counts), never by the official
checksums, so valid re-encoded copies load. Pickles are read with an unpickler that only
admits numpy arrays: a dataset file can never run code.
"""

from __future__ import annotations

import io
import hashlib
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives inside the data directory and what a valid copy looks like."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    label_key: str
    num_classes: int
    num_train: int
    num_test: int
    url: str
    md5: str
    mean: tuple[float, float, float]  # per-channel mean of the training images, in [0, 1]
    std: tuple[float, float, float]


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "batches.meta", "label_names", "labels", 10, 50_000, 10_000,
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": DatasetSpec(
        "cifar100", "cifar-100-python", ("train",), ("test",),
        "meta", "fine_label_names", "fine_labels", 100, 50_000, 10_000,
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}


@dataclass
class Split:
    """One split held as tensors: images (N, 3, 32, 32) uint8 and labels (N,) int64."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    coarse_labels: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> "Split":
        """The first `n` images (all of them when there are fewer): a fixed subset to measure on."""
        coarse = None if self.coarse_labels is None else self.coarse_labels[:n]
        return Split(self.name, self.images[:n], self.labels[:n], self.classes, coarse, list(self.notes))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def digest(self) -> str:
        """Content hash of the images and labels (what a run's dataset input records)."""
        h = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}") from None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The explicit directory, else $ORCHESTRATOR_DATA_DIR, else ./data."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or "data").expanduser()


class _ArrayUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name} in a dataset file")
        if name in ("_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray
            return getattr(multiarray, name)
        return getattr(np, name)


def _read_pickle(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # truncated or foreign files raise many exception types
        raise DataError(f"{path} is not a valid CIFAR batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict with 'data' and labels")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _labels(batch: dict, key: str, path: Path, num_classes: int, rows: int) -> np.ndarray:
    if key not in batch:
        raise DataError(f"{path} has no {key!r} key (keys: {', '.join(map(str, batch))})")
    labels = np.asarray(batch[key])
    if labels.ndim != 1 or labels.shape[0] != rows:
        raise DataError(f"{path}: {key!r} has shape {labels.shape}, expected ({rows},) to match 'data'")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key!r} has dtype {labels.dtype}, expected integers")
    if rows and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: {key!r} values span [{labels.min()}, {labels.max()}], allowed [0, {num_classes - 1}]")
    return labels.astype(np.int64)


def _read_batch(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    batch = _read_pickle(path)
    if "data" not in batch:
        raise DataError(f"{path} has no 'data' key (keys: {', '.join(map(str, batch))})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    labels = _labels(batch, spec.label_key, path, spec.num_classes, data.shape[0])
    coarse = _labels(batch, "coarse_labels", path, 20, data.shape[0]) if spec.name == "cifar100" else None
    return data, labels, coarse


def _maybe_download(root: Path, spec: DatasetSpec, download: bool) -> None:
    folder = root / spec.folder
    if folder.is_dir() and any(folder.iterdir()):
        return
    how = (f"put the extracted '{spec.folder}/' folder (from {spec.url}) inside {root}, "
           f"or pass another --data-dir / set ${DATA_DIR_ENV}")
    if not download:
        raise DataError(f"{spec.name} not found: looked for {folder}; {how}")
    from torchvision.datasets.utils import download_and_extract_archive  # slow import: only here

    try:
        download_and_extract_archive(spec.url, download_root=str(root), md5=spec.md5)
    except Exception as exc:  # offline, DNS, HTTP or checksum errors
        raise DataError(f"{spec.name} not found at {folder} and download failed ({exc}); {how}") from None


def load_split(dataset: str, split: str, data_dir=None, download: bool = True) -> Split:
    """Read the 'train' or 'test' split of `dataset` from `data_dir` (downloading if absent)."""
    spec = get_spec(dataset)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; allowed: train, test")
    root = resolve_data_dir(data_dir)
    _maybe_download(root, spec, download)
    folder = root / spec.folder
    files = spec.train_files if split == "train" else spec.test_files
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} is incomplete: missing {', '.join(missing)}")
    stamp = tuple((f, st.st_mtime_ns, st.st_size) for f in files for st in [(folder / f).stat()])
    key = (spec.name, split, str(folder.resolve()), stamp)
    if key in _SPLITS:  # every trial of a study reads the same files: decoded once per process (the tensors
        return replace(_SPLITS[key], notes=list(_SPLITS[key].notes))  # are shared: nobody writes into them)
    if len(_SPLITS) >= 4:  # the train and test splits of two data sets at most: a few hundred MB of uint8
        _SPLITS.clear()
    _SPLITS[key] = split_ = _read_split(folder, files, spec, split)
    return split_


_SPLITS: dict[tuple, Split] = {}


def _read_split(folder: Path, files: list[str], spec: DatasetSpec, split: str) -> Split:
    parts = [_read_batch(folder / f, spec) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts]) if spec.name == "cifar100" else None
    classes = _class_names(folder, spec)
    expected = spec.num_train if split == "train" else spec.num_test
    notes = [] if len(labels) == expected else [
        f"{spec.name} {split}: {len(labels):,} images, the standard split has {expected:,}"]
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(f"{spec.name}/{split}", images, torch.from_numpy(labels), classes,
                 None if coarse is None else torch.from_numpy(coarse), notes)


def _class_names(folder: Path, spec: DatasetSpec) -> list[str]:
    meta_path = folder / spec.meta_file
    if not meta_path.is_file():
        return [str(i) for i in range(spec.num_classes)]
    names = _read_pickle(meta_path).get(spec.names_key)
    if not isinstance(names, list) or len(names) != spec.num_classes:
        raise DataError(f"{meta_path}: {spec.names_key!r} must list {spec.num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def split_validation(train: Split, val_size: int) -> tuple[Split, Split]:
    """Hold out the last `val_size` training images, so studies never select on the test set."""
    n = len(train)
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be in [1, {n - 1}] for a train split of {n} images")
    cut = n - val_size

    def part(sl: slice, suffix: str) -> Split:
        coarse = None if train.coarse_labels is None else train.coarse_labels[sl]
        return Split(train.name.replace("/train", suffix), train.images[sl], train.labels[sl],
                     train.classes, coarse)

    return part(slice(0, cut), "/train-fit"), part(slice(cut, n), "/val")


def load_arrays(path, prefix: str = "x_test", labels_key: str = "y_test", num_classes: int = 10) -> Split:
    """A split from an .npz holding HWC uint8 images (e.g. a lossless real-pixel subset)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz[prefix], npz[labels_key]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read arrays {prefix!r}/{labels_key!r} from {path}: {exc}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(y) != len(x):
        raise DataError(f"{path}: {prefix!r} is {x.dtype} {x.shape}, expected uint8 (N, 32, 32, 3)")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: {labels_key!r} values outside [0, {num_classes - 1}]")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return Split(f"{path.name}:{prefix}", images, torch.from_numpy(y.astype(np.int64)),
                 [str(i) for i in range(num_classes)])
