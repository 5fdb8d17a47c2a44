"""The peers on the same base, split and fine-tune budget as a study: Torch-Pruning, NNCF, torch.nn.utils.prune.

Each peer is used through its own documented API; this product only fine-tunes (its trainer, the study's KD
fine-tune for the same epochs) and measures (its footprint: parameter bits with sparse overhead + activation
peak). Points:
- `torch.nn.utils.prune.global_unstructured` (L1) at each --prune-ratio, fine-tuned with the masks held;
- Torch-Pruning 1.6 `BasePruner` with `GroupMagnitudeImportance` (group norm, the ratio in every block) and
  `LAMPImportance` (the ratio over all blocks together, `global_pruning`) at each --channel-ratio of the blocks'
  inner channels (option-A shortcuts tie the residual stream to fixed
  channel positions, so the stream stays whole, as in this product's own channel removal), fine-tuned;
- NNCF 3.4 `nncf.quantize` (int8 PTQ, 300 calibration images) of the base and of every point above; its
  footprint is this product's accounting of the same model at 8-bit weights and 8-bit activations.
Every point is appended to --out (JSON lines) as it finishes, its NNCF twin right after it; a rerun skips the
points already there (a pruned point whose NNCF twin is missing is trained again).

    pip install -e '.[peers]'
    python benchmarks/peers.py --base runs/resnet20-baseline.pt --data-dir D --space search_spaces/quick_cpu.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from torch import nn


def _peers():
    """Both peers present, else one line naming the extra. NNCF is imported only when it quantizes: importing
    it patches torch's functions in the process, after which Torch-Pruning's traced graph finds nothing to prune."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("nncf", "torch_pruning")):
        raise SystemExit("error: the peers need the [peers] extra: pip install -e '.[peers]'")
    # NNCF builds its C++ quantization kernels on first use: minutes on 2 cores, past its 60 s default
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


def torch_prune(model: nn.Module, ratio: float) -> nn.Module:
    """The brief's own tool: global L1 unstructured over every conv and linear weight (masks stay attached)."""
    from torch.nn.utils import prune

    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
    return model


def tp_prune(model: nn.Module, ratio: float, importance: str) -> nn.Module:
    import torch_pruning as tp

    imp = {"group_norm": tp.importance.GroupMagnitudeImportance(p=2),
           "lamp": tp.importance.LAMPImportance(p=2)}[importance]
    stream = [model.conv1, model.linear] + [b.conv2 for stage in (model.layer1, model.layer2, model.layer3)
                                            for b in stage]
    # group norm: the same ratio in every block. LAMP ranks across layers (its scores are normalized per layer,
    # which leaves the order within a layer unchanged: at one ratio per layer it removes group norm's channels),
    # so it prunes globally, the ratio over all the blocks' inner channels together
    pruner = tp.pruner.BasePruner(model, torch.zeros(1, 3, 32, 32), importance=imp, pruning_ratio=ratio,
                                  ignored_layers=stream, global_pruning=importance == "lamp")
    pruner.step()
    return model


def nncf_int8(model: nn.Module, train, normalization: dict) -> nn.Module:
    import nncf

    from orchestrator.loader import DeviceLoader

    batches = [x for x, _ in DeviceLoader(train, 50, normalization["mean"], normalization["std"])][:6]
    return nncf.quantize(copy.deepcopy(model).eval(), nncf.Dataset(batches), subset_size=300)


def footprint(model: nn.Module, int8: bool = False) -> dict:
    """This product's footprint; `int8`: of the same model at 8-bit weights (every layer) and activations."""
    from orchestrator.footprint import measure
    from orchestrator.quant import quantize_

    if int8:
        model = quantize_(copy.deepcopy(model), {"bits": 8, "ends_bits": 8})
    fp = measure(model, act_bits=8 if int8 else None)
    return {"total_bits": fp.total_bits, "param_bits": fp.param_bits, "activation_peak_bits": fp.activation_peak_bits}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--space", default="search_spaces/quick_cpu.yaml", help="its val_size and fine-tune settings")
    ap.add_argument("--epochs", type=float, default=1.0, help="KD fine-tune epochs per point (the study's)")
    ap.add_argument("--prune-ratio", type=float, nargs="*", default=[0.7, 0.9])
    ap.add_argument("--channel-ratio", type=float, nargs="*", default=[0.3, 0.5])
    ap.add_argument("--importance", nargs="*", default=["group_norm", "lamp"])
    ap.add_argument("--out", default="runs/peers.jsonl")
    args = ap.parse_args()
    _peers()
    from orchestrator.checkpoint import load_model
    from orchestrator.data import load_split, split_validation
    from orchestrator.finetune import FinetuneConfig, FinetuneData, finetune
    from orchestrator.pruning import finalize_
    from orchestrator.study import load_space
    from orchestrator.train import evaluate

    space = load_space(args.space)
    base, ckpt = load_model(args.base)
    norm = ckpt.normalization
    train, val = split_validation(load_split(ckpt.dataset, "train", args.data_dir), space.val_size)
    test = load_split(ckpt.dataset, "test", args.data_dir)
    cfg = FinetuneConfig(**{**space.finetune.model_dump(exclude={"kd"}), "epochs": args.epochs, "kd": {}})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["point"] for line in out.read_text().splitlines()} if out.exists() else set()

    def record(point: str, tool: str, model: nn.Module, seconds: float, float_model: nn.Module | None = None):
        """`float_model`: the model NNCF quantized, accounted at 8 bits (NNCF's own modules are not read)."""
        sizes = footprint(float_model, int8=True) if float_model is not None else footprint(model)
        row = {"point": point, "tool": tool, "val_acc": evaluate(model, val, norm)["acc"],
               "test_acc": evaluate(model, test, norm)["acc"], "cpu_minutes": seconds / 60, **sizes}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.add(point)
        print(f"{point}: val {100 * row['val_acc']:.2f}% test {100 * row['test_acc']:.2f}% "
              f"{row['total_bits'] / 8:,.0f} B {seconds / 60:.1f} min", flush=True)

    def pruned(point: str, make) -> tuple[nn.Module, float] | None:
        """The base pruned for `point` (not yet fine-tuned) with its seconds, or None when both rows exist."""
        if {point, f"{point}+nncf-int8"} <= done:
            return None
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        for p in model.parameters():  # the base is every fine-tune's KD teacher, which freezes it: a copy comes
            p.requires_grad_(True)  # frozen, trains nothing and leaves Torch-Pruning's traced graph empty
        return make(model), time.perf_counter() - t0

    # every pruning first: importing NNCF (`_peers`) patches torch, after which Torch-Pruning traces nothing
    todo = {f"torch-prune-l1-{r}": ("torch.nn.utils.prune", pruned(f"torch-prune-l1-{r}", lambda m, r=r: torch_prune(m, r)))
            for r in args.prune_ratio}
    todo |= {f"tp-{imp}-{r}": ("Torch-Pruning", pruned(f"tp-{imp}-{r}", lambda m, r=r, imp=imp: tp_prune(m, r, imp)))
             for imp in args.importance for r in args.channel_ratio}
    if "base" not in done:
        record("base", "base", base, 0.0)
    if "nncf-int8" not in done:
        t0 = time.perf_counter()
        record("nncf-int8", "NNCF", nncf_int8(base, train, norm), time.perf_counter() - t0, base)
    for point, (tool, made) in todo.items():  # each point's fine-tune, then its NNCF twin at once: a killed run
        if made is None:                      # loses one point at most
            continue
        model, seconds = made
        t0 = time.perf_counter()
        finetune(model, cfg, FinetuneData(train=train, val=val, normalization=norm, teacher=base,
                                          eval_each_epoch=False), point)
        finalize_(model)
        seconds += time.perf_counter() - t0
        if point not in done:
            record(point, tool, model, seconds)
        if f"{point}+nncf-int8" not in done:
            t0 = time.perf_counter()
            record(f"{point}+nncf-int8", f"{tool} + NNCF", nncf_int8(model, train, norm),
                   seconds + time.perf_counter() - t0, model)
    table(out)


def table(path: Path) -> None:
    """The points of `path` as a Markdown table, smallest footprint first, against the base's row."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    base = next(r for r in rows if r["point"] == "base")
    print("| tool | point | footprint | smaller by | val | test | vs base (test) | CPU min |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["total_bits"]):
        print(f"| {r['tool']} | {r['point']} | {r['total_bits'] / 8000:,.0f} KB | "
              f"{base['total_bits'] / r['total_bits']:.1f}x | {100 * r['val_acc']:.2f}% | {100 * r['test_acc']:.2f}% | "
              f"{100 * (r['test_acc'] - base['test_acc']):+.2f} | {r['cpu_minutes']:.1f} |")


if __name__ == "__main__":
    main()
