"""Fixtures: tiny CIFAR-format folders that the tests write themselves."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest


def write_batch(path: Path, data: np.ndarray, labels, label_key="labels", bytes_keys=False, **extra):
    obj = {"data": data, label_key: list(map(int, labels)), **extra}
    if bytes_keys:  # the official files are python-2 pickles with bytes keys
        obj = {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj))


def make_cifar10(root: Path, per_batch=20, n_test=30, seed=0, bytes_keys=False) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_batch(folder / f"data_batch_{i}", rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                    rng.integers(0, 10, per_batch), bytes_keys=bytes_keys)
    write_batch(folder / "test_batch", rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                np.arange(n_test) % 10, bytes_keys=bytes_keys)
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


def make_cifar100(root: Path, n_train=60, n_test=20, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        write_batch(folder / name, rng.integers(0, 256, (n, 3072), dtype=np.uint8), fine,
                    label_key="fine_labels", coarse_labels=list(map(int, fine // 5)))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)],
                                                "coarse_label_names": [f"c{i}" for i in range(20)]}))
    return root


@pytest.fixture
def cifar10_dir(tmp_path) -> Path:
    return make_cifar10(tmp_path / "data")


@pytest.fixture
def cifar100_dir(tmp_path) -> Path:
    return make_cifar100(tmp_path / "data100")


@pytest.fixture
def real_data_dir() -> Path:
    """The data directory given to the test run (CI: the shared CIFAR-10 copy), when it holds CIFAR-10."""
    root = os.environ.get("ORCHESTRATOR_DATA_DIR")
    if not root or not (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip("ORCHESTRATOR_DATA_DIR does not hold a CIFAR-10 copy")
    return Path(root)


def with_bn_stats(model):
    """Give BN non-trivial running statistics (a lost buffer would then change outputs); eval mode."""
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32) * 2 + 1)
    return model.eval()


@pytest.fixture
def base(cifar10_dir, tmp_path) -> Path:
    """A tiny untrained resnet8 checkpoint (cifar10 normalization), written through the CLI."""
    from click.testing import CliRunner

    from orchestrator.cli import main

    out = tmp_path / "base.pt"
    args = ["train", "--arch", "resnet8", "--width-mult", "0.5", "--data-dir", str(cifar10_dir), "--epochs", "0",
            "--batch-size", "32", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return out


def bad_config():
    """The exceptions a rejected config raises: pydantic's (a field or key) or ours (a cross-field rule)."""
    from pydantic import ValidationError

    from orchestrator.errors import OrchestratorError

    return (ValidationError, OrchestratorError)


# --- helpers shared by the test modules (imported as `from conftest import ...`) ---

def run(*args):
    """The CLI in-process, every argument as a string."""
    from click.testing import CliRunner

    from orchestrator.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, pattern):
    """A failed command that printed exactly one `Error:` line matching `pattern`, and no traceback."""
    import re

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.output


TOY_NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def toy_split(n=48, seed=0):
    import torch

    from orchestrator.data import Split

    g = torch.Generator().manual_seed(seed)
    return Split("toy", torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                 torch.arange(n) % 10, [str(i) for i in range(10)])


def toy_data(tmp_path=None, **kw):
    from orchestrator.finetune import FinetuneData

    return FinetuneData(train=toy_split(48), val=toy_split(20, seed=1), normalization=TOY_NORM,
                     work_dir=tmp_path, **kw)


def space_file(tmp_path, base, **over):
    """A tiny search space over the `base` fixture's model, written to tmp_path/space.yaml."""
    import yaml

    space = {"name": "tiny", "base": str(base), "val_size": 20,
             "finetune": {"batch_size": 16},
             "dimensions": {"method": ["none", "global_magnitude", "l1_filter"], "ratio": [0.3, 0.6],
                            "finetune_epochs": [0], "bits": [32, 4], "act_bits": [32]},
             "sampler": {"name": "random", "seed": 0, "veto": None}, "budget": {"trials": 4}}
    space.update(over)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder (./mlruns) lands here
    return tmp_path
