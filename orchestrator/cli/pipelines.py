"""Pipeline commands: pipeline, quantize, distill (each runs a pipeline and prints its steps)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OrchestratorError
from . import _device, _one_line_errors, data_dir_option, device_option, main
from .compress import _read_yaml


def _kb(bits) -> str:
    return f"{bits / 8 / 1024:,.1f}"


def _run_pipeline(config, base, data_dir, out, device, quiet):
    from ..pipeline import run_pipeline

    result = run_pipeline(config, base=base, data_dir=data_dir, out=out, device=_device(device), progress=not quiet)
    click.echo(f"{'step':<10} {'eval acc':>8} {'params':>9} {'nonzero':>9} {'param KB':>9} {'act bits':>8} "
               f"{'act peak KB':>11} {'total KB':>9}")
    for s in result["steps"]:
        click.echo(f"{s['step']:<10} {100 * s['eval_acc']:>7.2f}% {s['params']:>9,} {s['nonzero']:>9,} "
                   f"{_kb(s['param_bits']):>9} {s['act_bits']:>8} {_kb(s['activation_peak_bits']):>11} "
                   f"{_kb(s['total_bits']):>9}")
    f = result["final"]
    click.echo(f"test accuracy {100 * f['base_test_acc']:.2f}% -> {100 * f['test_acc']:.2f}%; footprint "
               f"{_kb(result['steps'][0]['total_bits'])} KB -> {_kb(f['total_bits'])} KB "
               f"({f['compression']:.1f}x; parameters {f['param_compression']:.1f}x)")
    click.echo(f"-> {out}, {result['export']} ({f['file_bytes']:,} bytes), {Path(out).with_suffix('.json')}")


pipeline_options = [
    data_dir_option,
    click.option("--val-size", type=click.IntRange(min=0), default=5000, show_default=True,
                 help="Held-out training images for per-step evaluation and selection (0: use the test set)."),
    device_option,
    click.option("--quiet", is_flag=True, help="No progress output."),
]


def _with(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn
    return deco


@main.command("pipeline")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--base", type=click.Path(dir_okay=False), default=None, help="Base checkpoint (overrides 'base:').")
@_with(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default="runs/pipeline.pt", show_default=True,
              help="Final checkpoint; the export (.orcx) and the record (.json) go beside it.")
@_one_line_errors
def pipeline_(pipeline_file, base, data_dir, val_size, device, quiet, out):
    """Run a compression pipeline (YAML: base, steps of prune / finetune / quantize); resumes when rerun."""
    from ..pipeline import load_pipeline

    config = load_pipeline(pipeline_file)
    if val_size != 5000 or "val_size" not in config.model_fields_set:
        config = config.model_copy(update={"val_size": val_size})
    _run_pipeline(config, base, data_dir, out, device, quiet)


def _layer_bits(text):
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, _, bits = part.partition("=")
        if not bits.strip().isdigit():
            raise OrchestratorError(f"--layer-bits entry {part!r} must look like layer.name=4")
        out[name.strip()] = int(bits)
    return out


@main.command("quantize")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["int", "binary", "fp16", "bf16"]), default="int", show_default=True)
@click.option("--bits", default="8", show_default=True, help="Weight bits for --format int (2..16).")
@click.option("--act-bits", type=int, default=None, help="Quantize activations to this many bits (2..16).")
@click.option("--layer-bits", default=None, help="Per-layer weight bits, e.g. layer1.0.conv1=2,linear=8.")
@click.option("--ends-bits", default="8", show_default=True, help="Bits of the first conv and classifier ('none': like the rest).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=None, help="QAT epochs.")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None, help="Distill from this checkpoint during QAT.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML quantization config.")
@_with(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: runs/<name>-<method>.pt")
@_one_line_errors
def quantize_cmd(checkpoint, method, fmt, bits, act_bits, layer_bits, ends_bits, finetune_epochs, teacher,
                 config_file, data_dir, val_size, device, quiet, out):
    """Quantize a checkpoint (post-training or QAT), export it, report accuracy and footprint."""
    from ..pipeline import PipelineConfig

    cfg = _read_yaml(config_file, "quantization config")
    cfg.update({"method": method, "format": fmt, "bits": int(bits) if bits.strip().isdigit() else bits,
                "ends_bits": None if ends_bits.lower() == "none" else (int(ends_bits) if ends_bits.isdigit() else ends_bits)})
    if act_bits is not None:
        cfg["act_bits"] = act_bits
    if layer_bits:
        cfg["layer_bits"] = _layer_bits(layer_bits)
    if finetune_epochs is not None:
        cfg.setdefault("finetune", {})["epochs"] = finetune_epochs
    if teacher:
        cfg.setdefault("finetune", {}).setdefault("kd", {})
    config = PipelineConfig(teacher=teacher, val_size=val_size, steps=[{"quantize": cfg}])
    out = out or f"runs/{Path(checkpoint).stem}-{method}.pt"
    _run_pipeline(config, checkpoint, data_dir, out, device, quiet)


@main.command("distill")
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--teacher", type=click.Path(dir_okay=False), required=True, help="Teacher checkpoint (the dense baseline).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=float, default=4.0, show_default=True)
@click.option("--alpha", type=float, default=0.9, show_default=True, help="Weight of the teacher's soft targets.")
@_with(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: runs/<name>-kd.pt")
@_one_line_errors
def distill_cmd(student, teacher, epochs, lr, batch_size, temperature, alpha, data_dir, val_size, device, quiet, out):
    """Fine-tune a (pruned or small) student with knowledge distillation from a teacher checkpoint."""
    from ..pipeline import PipelineConfig

    ft = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "kd": {"temperature": temperature, "alpha": alpha}}
    config = PipelineConfig(teacher=teacher, val_size=val_size, steps=[{"finetune": ft}])
    _run_pipeline(config, student, data_dir, out or f"runs/{Path(student).stem}-kd.pt", device, quiet)
