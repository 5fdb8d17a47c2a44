"""Self-describing checkpoints: architecture as data, never pickled modules.

A checkpoint holds plain data and tensors only (arch, widths, num_classes, dataset,
normalization, config, metrics, state_dict), is written atomically and is read with
`torch.load(weights_only=True)`, so loading a file never runs code from it. Public CIFAR ResNet
checkpoints (`{'best_prec1', 'state_dict'}` with `module.` prefixes) load too: their widths are
read off the tensor shapes, so any depth (and a channel-pruned one) rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ModelSpecError
from .models import build_model
from .models.resnet import public_resnet
from .paths import write_atomic
from .qformat import act_quant_of, attach_act_quant_, set_act_bits_, set_weight_spec_, weight_spec

FORMAT = "orchestrator.checkpoint"
VERSION = 1
# Normalization the public CIFAR ResNet checkpoints were trained with (see their README).
PUBLIC_RESNET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
FIELDS = ("arch", "widths", "num_classes", "dataset", "normalization", "config", "metrics", "quantization",
          "state_dict")  # what a file stores, in its order (`source` is not stored: the format says it)


@dataclass
class Checkpoint:
    arch: str
    widths: dict
    num_classes: int
    state_dict: dict
    dataset: str = "cifar10"
    normalization: dict = field(default_factory=lambda: dict(PUBLIC_RESNET_NORMALIZATION))
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    source: str = FORMAT  # FORMAT, or "public-resnet" for an imported public checkpoint
    quantization: dict = field(default_factory=dict)  # module name -> {"format", "bits"} of its weight

    def build(self, device="cpu") -> nn.Module:
        """Rebuild the model this checkpoint describes, with its weights, in eval mode."""
        try:
            model = build_model(self.arch, self.num_classes, self.widths)
        except ModelSpecError as exc:
            raise CheckpointError(f"checkpoint describes an invalid model: {exc}") from None
        for name, q in self.quantization.items():
            module = model.get_submodule(name)
            if "format" in q:
                set_weight_spec_(module, q["format"], q["bits"])  # the scale comes with the state dict
            if "act_bits" in q:
                attach_act_quant_(module, q["act_bits"])
        set_act_bits_(model)
        _load_state(model, self.state_dict)
        return model.to(device).eval()

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **{k: getattr(self, k) for k in FIELDS}}


def _checked(ckpt: Checkpoint, path) -> Checkpoint:
    """Field types and finite weights: a bad file is refused when read, not evaluated as 10% with loss nan."""
    kinds = {"arch": str, "widths": (dict, list), "num_classes": int, "state_dict": dict, "dataset": str,
             "normalization": dict, "config": dict, "metrics": dict, "quantization": dict}
    for name, kind in kinds.items():
        value = getattr(ckpt, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: field {name!r} is a {type(value).__name__} ({str(value)[:40]!r}); "
                                  f"expected {getattr(kind, '__name__', 'a mapping or list')}")
    if ckpt.num_classes < 2:
        raise CheckpointError(f"{path}: num_classes={ckpt.num_classes}; at least 2 classes are needed")
    for key, t in ckpt.state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {key!r} is a {type(t).__name__}, not a tensor")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values (a diverged training?)")
    return ckpt


def _load_state(model: nn.Module, state: dict) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit the architecture
        detail = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise CheckpointError(f"weights do not fit the model ({detail[:300]})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"weights do not fit the model: missing {missing[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")


def from_model(model: nn.Module, dataset: str, normalization: dict, config: dict | None = None,
               metrics: dict | None = None) -> Checkpoint:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    masked = [k for k in state if k.endswith(("_orig", "_mask"))]
    if masked:
        raise CheckpointError(f"model still carries pruning masks ({masked[0]}, ...): make them "
                              "permanent (prune.remove) before saving a final checkpoint")
    quantization = {name: dict(zip(("format", "bits"), weight_spec(m)))
                    for name, m in model.named_modules() if weight_spec(m)}
    for name, m in model.named_modules():
        if act_quant_of(m) is not None:
            quantization.setdefault(name, {})["act_bits"] = m.act_quant.bits
    return Checkpoint(model.arch, model.widths, model.num_classes, state, dataset,
                      {k: list(v) for k, v in normalization.items()}, config or {}, metrics or {},
                      quantization=quantization)


def save_checkpoint(path, ckpt: Checkpoint) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated file under `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: torch.save(ckpt.to_dict(), tmp))
    except (OSError, RuntimeError) as exc:  # torch's writer reports a failed open as a RuntimeError
        raise CheckpointError(f"cannot write checkpoint {path}: {str(exc).splitlines()[0][:200]}") from None
    return path


def load_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] not in (b"PK", b"\x80\x02"):  # torch.save zip archive, or legacy pickle
        raise CheckpointError(f"{path} is not a checkpoint (neither a torch zip archive nor a legacy torch pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):
            first = "it holds objects other than tensors and plain data, and loading never runs code"
        raise CheckpointError(f"{path} is not a readable checkpoint: {first}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {obj.get('version')} unsupported; allowed: {VERSION}")
        try:
            return _checked(Checkpoint(**{k: obj[k] for k in FIELDS if k != "quantization"},
                                       quantization=obj.get("quantization", {})), path)
        except KeyError as exc:
            raise CheckpointError(f"{path}: checkpoint lacks the {exc.args[0]!r} field") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        ckpt = _checked(_from_public_resnet(state, path), path)
        if "best_prec1" in obj:
            ckpt.metrics["best_prec1"] = float(obj["best_prec1"])
        return ckpt
    raise CheckpointError(f"{path} is neither an orchestrator checkpoint nor a public CIFAR ResNet checkpoint")


def _from_public_resnet(state: dict, path: Path) -> Checkpoint:
    try:
        arch, widths, num_classes, state = public_resnet(state)
    except KeyError as exc:
        raise CheckpointError(f"{path} holds a state_dict that is not a CIFAR ResNet (no {exc})") from None
    dataset = {10: "cifar10", 100: "cifar100"}.get(num_classes, "cifar10")
    return Checkpoint(arch, widths, num_classes, state, dataset, source="public-resnet")


def load_model(path, device="cpu") -> tuple[nn.Module, Checkpoint]:
    """One call from a file to a runnable model (and the checkpoint that describes it)."""
    ckpt = load_checkpoint(path)
    return ckpt.build(device), ckpt


def load_any(path) -> tuple[nn.Module, str, dict]:
    """A model from a checkpoint or an export file, with its dataset and input normalization."""
    from .footprint.export import is_export, load_export

    if is_export(path):
        model, header = load_export(path)
        return model, header["dataset"], header["normalization"]
    model, ckpt = load_model(path)
    return model, ckpt.dataset, ckpt.normalization
