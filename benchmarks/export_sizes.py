"""Accounted footprint vs real exported file size for compressed variants of one checkpoint.

Variants: dense fp32, fp16, int8/int4 per-channel weights, binary weights, 50%/90% global magnitude
sparsity (no retraining), 90% + int4. Each is exported, reloaded, checked for identical predictions
and (optionally) evaluated on a data split. Prints a Markdown table.

    python benchmarks/export_sizes.py CHECKPOINT [--npz FILE | --data-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from orchestrator.checkpoint import load_model
from orchestrator.data import load_arrays, load_split
from orchestrator.footprint import measure
from orchestrator.footprint.export import export, load_export
from orchestrator.pruning.core import finalize_, prunable_layers, prune_global_magnitude_
from orchestrator.qformat import quantize_weight_
from orchestrator.train import evaluate

VARIANTS = {  # name: (global sparsity, weight precision in bits)
    "dense fp32": (0.0, 32), "fp16": (0.0, 16), "int8": (0.0, 8), "int4": (0.0, 4), "binary": (0.0, 1),
    "50% sparse": (0.5, 32), "90% sparse": (0.9, 32), "90% sparse + int4": (0.9, 4),
}


def make_variant(path, sparsity, bits):
    model, ckpt = load_model(path)
    if sparsity:
        finalize_(prune_global_magnitude_(model, sparsity))
    for m in prunable_layers(model).values():
        quantize_weight_(m, bits)
    return model.eval(), ckpt


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--npz", help="evaluate on x_test/y_test of this .npz")
    p.add_argument("--data-dir", help="evaluate on the CIFAR test split in this folder")
    args = p.parse_args()
    split = load_arrays(args.npz) if args.npz else (
        load_split("cifar10", "test", args.data_dir, download=False) if args.data_dir else None)
    print("| variant | nonzero | params accounted (B) | export payload (B) | payload/accounted | file (B) |"
          " peak act. fp32 / int8 (B) | total fp32 act. (B) | predictions equal | accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    x = torch.randn(64, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in VARIANTS.items():
            model, ckpt = make_variant(args.checkpoint, *spec)
            fp, fp8 = measure(model), measure(model, act_bits=8)
            info = export(model, Path(tmp) / "m.orcx", dataset=ckpt.dataset, normalization=ckpt.normalization)
            loaded, _ = load_export(Path(tmp) / "m.orcx")
            with torch.no_grad():
                same = torch.equal(model(x).argmax(1), loaded(x).argmax(1))
            acc = f"{100 * evaluate(loaded, split, ckpt.normalization)['acc']:.2f}%" if split else "-"
            print(f"| {name} | {fp.nonzero:,} | {fp.param_bits / 8:,.0f} | {info['payload_bytes']:,} | "
                  f"{info['payload_bytes'] / info['accounted_bytes']:.4f} | {info['file_bytes']:,} | "
                  f"{fp.activation_peak_bits / 8:,.0f} / {fp8.activation_peak_bits / 8:,.0f} | "
                  f"{fp.total_bits / 8:,.0f} | {same} | {acc} |")
    if split:
        print(f"\naccuracy: exported file reloaded, evaluated on {split.name} ({len(split):,} images)")


if __name__ == "__main__":
    main()
