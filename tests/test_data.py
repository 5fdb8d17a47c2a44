import pickle

import numpy as np
import pytest
import torch

from orchestrator import data as data_mod
from orchestrator.data import load_arrays, load_split, split_validation
from orchestrator.errors import DataError

from conftest import make_cifar10, write_batch


def test_cifar10_layout_shapes_and_pixels(cifar10_dir):
    train = load_split("cifar10", "train", cifar10_dir, download=False)
    test = load_split("cifar10", "test", cifar10_dir, download=False)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and len(test) == 30
    assert train.classes[3] == "class3"
    raw = pickle.loads((cifar10_dir / "cifar-10-batches-py" / "data_batch_2").read_bytes())
    # image 0 of batch 2 is image 20 of the split, rows are CHW (1024 red, then green, then blue)
    assert torch.equal(train.images[20], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))
    assert train.labels[20].item() == raw["labels"][0]
    assert any("50,000" in n for n in train.notes)  # a non-standard size is reported, not rejected


def test_official_bytes_keys_load(tmp_path):
    root = make_cifar10(tmp_path, bytes_keys=True)
    assert len(load_split("cifar10", "test", root, download=False)) == 30


def test_cifar100_fine_and_coarse(cifar100_dir):
    s = load_split("cifar100", "train", cifar100_dir, download=False)
    assert s.num_classes == 100 and len(s) == 60
    assert s.labels.max() < 100 and s.coarse_labels is not None
    assert torch.equal(s.coarse_labels, s.labels // 5)


def test_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match="looked for .*cifar-10-batches-py.*--data-dir"):
        load_split("cifar10", "train", tmp_path / "nowhere", download=False)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="download failed .*network unreachable"):
        load_split("cifar100", "test", tmp_path, download=True)


def test_truncated_batch_file(cifar10_dir):
    f = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_3 is not a valid CIFAR batch file"):
        load_split("cifar10", "train", cifar10_dir, download=False)


def test_missing_batch_file(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="incomplete: missing data_batch_5"):
        load_split("cifar10", "train", cifar10_dir, download=False)


def test_label_out_of_range(cifar10_dir):
    write_batch(cifar10_dir / "cifar-10-batches-py" / "test_batch",
                np.zeros((4, 3072), np.uint8), [0, 1, 10, 2])
    with pytest.raises(DataError, match=r"span \[0, 10\], allowed \[0, 9\]"):
        load_split("cifar10", "test", cifar10_dir, download=False)


def test_wrong_shape_and_dtype(cifar10_dir):
    write_batch(cifar10_dir / "cifar-10-batches-py" / "test_batch", np.zeros((4, 1024), np.float32), [0] * 4)
    with pytest.raises(DataError, match=r"float32 \(4, 1024\), expected uint8 \(N, 3072\)"):
        load_split("cifar10", "test", cifar10_dir, download=False)


def test_labels_count_mismatch(cifar10_dir):
    write_batch(cifar10_dir / "cifar-10-batches-py" / "test_batch", np.zeros((4, 3072), np.uint8), [0] * 3)
    with pytest.raises(DataError, match=r"expected \(4,\)"):
        load_split("cifar10", "test", cifar10_dir, download=False)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_pickle_cannot_run_code(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(DataError, match="forbidden object"):
        load_split("cifar10", "test", cifar10_dir, download=False)


def test_unknown_dataset_and_split(cifar10_dir):
    with pytest.raises(DataError, match="allowed: cifar10, cifar100"):
        load_split("mnist", "train", cifar10_dir)
    with pytest.raises(DataError, match="allowed: train, test"):
        load_split("cifar10", "valid", cifar10_dir)


def test_validation_split_is_the_tail(cifar10_dir):
    train = load_split("cifar10", "train", cifar10_dir, download=False)
    fit, val = split_validation(train, 25)
    assert len(fit) == 75 and len(val) == 25
    assert torch.equal(val.images, train.images[75:]) and torch.equal(fit.labels, train.labels[:75])
    with pytest.raises(DataError, match="val_size=100"):
        split_validation(train, 100)


def test_data_dir_from_environment(cifar10_dir, monkeypatch):
    monkeypatch.setenv(data_mod.DATA_DIR_ENV, str(cifar10_dir))
    assert len(load_split("cifar10", "test", None, download=False)) == 30


def test_npz_arrays(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_test=x, y_test=np.arange(6))
    s = load_arrays(tmp_path / "a.npz")
    assert s.images.shape == (6, 3, 32, 32)
    assert torch.equal(s.images[2, 1], torch.from_numpy(x[2, :, :, 1]))  # HWC -> CHW
    with pytest.raises(DataError, match="x_train"):
        load_arrays(tmp_path / "a.npz", prefix="x_train")


def test_real_copy_is_complete(real_data_dir):
    for split, n in (("train", 50_000), ("test", 10_000)):
        s = load_split("cifar10", split, real_data_dir, download=False)
        assert len(s) == n and not s.notes
        assert s.labels.bincount(minlength=10).tolist() == [n // 10] * 10
