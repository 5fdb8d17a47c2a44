"""Pipeline commands: pipeline, quantize, distill (each runs a pipeline and prints its steps)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OrchestratorError
from .common import Bits, _one_line_errors, data_dir_option, device_option, main, read_yaml, run_and_print, with_options


pipeline_options = [
    data_dir_option,
    click.option("--val-size", type=click.IntRange(min=0), default=5000, show_default=True,
                 help="Held-out training images for per-step evaluation and selection (0: use the test set)."),
    device_option,
    click.option("--quiet", is_flag=True, help="No progress output."),
]


@main.command("pipeline")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--base", type=click.Path(dir_okay=False), default=None, help="Base checkpoint (overrides 'base:').")
@with_options(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default="runs/pipeline.pt", show_default=True,
              help="Final checkpoint; the export (.orcx) and the record (.json) go beside it.")
@_one_line_errors
def pipeline_(pipeline_file, base, data_dir, val_size, device, quiet, out):
    """Run a compression pipeline (YAML: base, steps of prune / finetune / quantize); resumes when rerun."""
    from ..pipeline import load_pipeline

    config = load_pipeline(pipeline_file)
    if val_size != 5000 or "val_size" not in config.model_fields_set:
        config = config.model_copy(update={"val_size": val_size})
    run_and_print(config, base, data_dir, out, device, quiet)


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
@click.option("--bits", type=Bits(), default=8, show_default=True,
              help="Weight precision: 16 (fp16), 2..8 (int), 1 (binary), 32 (weights as they are).")
@click.option("--act-bits", type=Bits(activations=True), default=32, show_default=True,
              help="Activation bits: 2..16, or 32 (float).")
@click.option("--layer-bits", default=None, help="Per-layer weight bits, e.g. layer1.0.conv1=2,linear=8.")
@click.option("--ends-bits", type=Bits(allow_none=True), default=8, show_default=True,
              help="Bits of the first conv and classifier ('none': like the rest).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=None, help="QAT epochs.")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None, help="Distill from this checkpoint during QAT.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML quantization config.")
@with_options(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: runs/<name>-<method>.pt")
@_one_line_errors
def quantize_cmd(checkpoint, method, bits, act_bits, layer_bits, ends_bits, finetune_epochs, teacher,
                 config_file, data_dir, val_size, device, quiet, out):
    """Quantize a checkpoint (post-training or QAT), export it, report accuracy and footprint."""
    from ..pipeline import PipelineConfig

    cfg = read_yaml(config_file, "quantization config")
    source = click.get_current_context().get_parameter_source
    given = {"method": method, "bits": bits, "ends_bits": ends_bits, "act_bits": act_bits}
    cfg.update({k: v for k, v in given.items()  # a config file's values win over the options' defaults
                if k not in cfg or source(k) is not click.core.ParameterSource.DEFAULT})
    if source("bits") is not click.core.ParameterSource.DEFAULT:
        cfg.pop("format", None)  # an older config's weight format yields to the precision given here
    if layer_bits:
        cfg["layer_bits"] = _layer_bits(layer_bits)
    if finetune_epochs is not None:
        cfg.setdefault("finetune", {})["epochs"] = finetune_epochs
    if teacher:
        cfg.setdefault("finetune", {}).setdefault("kd", {})
    config = PipelineConfig(teacher=teacher, val_size=val_size, steps=[{"quantize": cfg}])
    out = out or f"runs/{Path(checkpoint).stem}-{cfg['method']}.pt"
    run_and_print(config, checkpoint, data_dir, out, device, quiet)


@main.command("distill")
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--teacher", type=click.Path(dir_okay=False), required=True, help="Teacher checkpoint (the dense baseline).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--temperature", type=float, default=4.0, show_default=True)
@click.option("--alpha", type=float, default=0.9, show_default=True, help="Weight of the teacher's soft targets.")
@with_options(pipeline_options)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: runs/<name>-kd.pt")
@_one_line_errors
def distill_cmd(student, teacher, epochs, lr, batch_size, temperature, alpha, data_dir, val_size, device, quiet, out):
    """Fine-tune a (pruned or small) student with knowledge distillation from a teacher checkpoint."""
    from ..pipeline import PipelineConfig

    ft = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "kd": {"temperature": temperature, "alpha": alpha}}
    config = PipelineConfig(teacher=teacher, val_size=val_size, steps=[{"finetune": ft}])
    run_and_print(config, student, data_dir, out or f"runs/{Path(student).stem}-kd.pt", device, quiet)
