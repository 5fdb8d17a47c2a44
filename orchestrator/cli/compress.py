"""Pruning commands: prune, sweep, sensitivity."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import OrchestratorError
from .common import _device, _one_line_errors, data_dir_option, device_option, main, read_yaml, run_and_print


def _floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OrchestratorError(f"{name}={text!r} must be comma-separated numbers, e.g. 0.1,0.5,0.9") from None


def _prune_config(method, ratio, stage_ratios, skip, rounds, schedule, finetune_epochs, finetune_lr, finetune_bs,
                  config_file):
    """The method config from a YAML file and/or the options actually given (others keep the method's defaults)."""
    config = read_yaml(config_file, "pruning config")
    given = {"method": method, "ratio": ratio, "stage_ratios": _floats(stage_ratios, "--stage-ratios"),
             "skip": list(skip) or None, "rounds": rounds, "schedule": schedule}
    config.update({k: v for k, v in given.items() if v is not None})
    ft_given = {k: v for k, v in (("epochs", finetune_epochs), ("lr", finetune_lr), ("batch_size", finetune_bs))
                if v is not None}
    if ft_given:
        config["finetune"] = {**(config.get("finetune") or {}), **ft_given}
    if "method" not in config:
        raise OrchestratorError("give --method NAME (or a config file with a 'method' key)")
    return config


def _print_sparsity(out, result):
    """Per-layer sparsity of the pruned model, its widths when channels went, parameters and MACs."""
    from ..checkpoint import load_model

    model, ckpt = load_model(out)
    s = ckpt.metrics["sparsity"]
    click.echo(f"{'layer':<24} {'weights':>9} {'sparsity':>9}")
    for name, m in model.named_modules():
        if name in s:
            click.echo(f"{name:<24} {m.weight.numel():>9,} {100 * s[name]:>8.1f}%")
    click.echo(f"{'total':<24} {'':>9} {100 * s['total']:>8.1f}%")
    base, f = result["steps"][0], result["final"]
    if f["params"] < base["params"]:
        click.echo(f"widths: {json.dumps(model.widths)}")
    click.echo(f"parameters {base['params']:,} -> {f['params']:,} (nonzero {f['nonzero']:,}); "
               f"MACs {base['macs']:,} -> {f['macs']:,} (sparse {f['macs_sparse']:,})")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False), required=False)
@click.option("--method", default=None, help="Pruning method (see --list).")
@click.option("--ratio", type=float, default=None, help="Fraction removed: weights (unstructured) or channels per group.")
@click.option("--stage-ratios", default=None, help="Structured: one ratio per stage, e.g. 0.6,0.3,0.1.")
@click.option("--skip", multiple=True, help="Structured: a channel group to leave whole (repeatable).")
@click.option("--rounds", type=int, default=None, help="Iterative methods (han, lottery): prune/retrain rounds.")
@click.option("--schedule", default=None, help="Iterative methods: one_shot, geometric or cubic.")
@click.option("--finetune-epochs", type=int, default=None, help="Epochs of retraining (per round for han).")
@click.option("--finetune-lr", type=float, default=None, help="Peak learning rate of the retraining.")
@click.option("--finetune-batch-size", type=int, default=None, help="Images per step of the retraining (128).")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None,
              help="Distill from this checkpoint while fine-tuning (KD; finetune.kd in a config sets T and alpha).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file with the method config (options given here override it).")
@data_dir_option
@click.option("--val-size", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Training images held out for selection/sensitivity when the method needs data (0: none).")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Pruned checkpoint to write (default: runs/<name>-<method>.pt).")
@click.option("--list", "list_methods", is_flag=True, help="List the methods and their config keys, then exit.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@_one_line_errors
def prune(checkpoint, method, ratio, stage_ratios, skip, rounds, schedule, finetune_epochs, finetune_lr,
          finetune_batch_size, teacher, config_file, data_dir, val_size, device, out, list_methods, quiet):
    """Prune a checkpoint (optionally retraining), print per-layer sparsity, save and export the pruned model."""
    from ..pipeline import PipelineConfig
    from ..pruning import METHODS, parse_config

    if list_methods:
        for name, (cls, _) in METHODS.items():
            keys = ", ".join(k for k in cls.model_fields if k != "method")
            click.echo(f"{name:<17} {'structured' if cls.structured else 'masks':<10} {keys}")
        return
    if checkpoint is None:
        raise OrchestratorError("give the CHECKPOINT to prune (or --list to see the methods)")
    config = _prune_config(method, ratio, stage_ratios, skip, rounds, schedule, finetune_epochs, finetune_lr,
                           finetune_batch_size, config_file)
    out = out or f"runs/{Path(checkpoint).stem}-{config['method']}.pt"
    if teacher:
        config.setdefault("finetune", {}).setdefault("kd", {})
    config = parse_config(config)  # its own errors name the method and key as the config file has them
    val_size = val_size if config.needs_data() else 0  # nothing to select or retrain on: evaluate on test
    pipeline = PipelineConfig(teacher=teacher, val_size=val_size, steps=[{"prune": config}])
    result = run_and_print(pipeline, checkpoint, data_dir, out, device, quiet)
    _print_sparsity(out, result)


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--methods", default="global_magnitude,layer_magnitude,random", show_default=True,
              help="Comma-separated method names (any registered method; no retraining).")
@click.option("--ratios", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.85,0.9,0.95", show_default=True)
@data_dir_option
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--val-size", type=click.IntRange(min=1), default=5000, show_default=True)
@device_option
@click.option("--bn-recalibration", type=click.IntRange(min=0), default=0, show_default=True,
              help="Re-estimate BN statistics on this many training images after pruning (methods become NAME+bn).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/sweep", show_default=True,
              help="Folder for sweep.json (resumable), sweep.md and sweep.png.")
@_one_line_errors
def sweep(checkpoint, methods, ratios, data_dir, split, val_size, device, bn_recalibration, out_dir):
    """Accuracy for many pruning ratios without retraining (the seed's method 1); resumes when rerun."""
    from .. import workflows
    from ..pruning.sweep import table_markdown

    def echo(row):
        click.echo(f"{row['method']:<17} ratio {row['ratio']:.2f}: sparsity {100 * row['sparsity']:.1f}%, "
                   f"accuracy {100 * row['acc']:.2f}%")

    rows = workflows.sweep_checkpoint(checkpoint, methods=[m.strip() for m in methods.split(",") if m.strip()],
                                      ratios=_floats(ratios, "--ratios"), data_dir=data_dir, split=split,
                                      val_size=val_size, out_dir=out_dir, device=_device(device), on_point=echo,
                                      bn_recalibration=bn_recalibration)
    click.echo(table_markdown(rows) + f"-> {out_dir}/sweep.md, sweep.png, sweep.json")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--ratios", default="0.1,0.3,0.5,0.7,0.9", show_default=True, help="Fractions of filters removed.")
@click.option("--groups", type=click.Choice(["internal", "all"]), default="internal", show_default=True,
              help="all: also coupled groups (the residual stream of option-B ResNets).")
@data_dir_option
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="val: the last --val-size training images (select on these, not on test).")
@click.option("--val-size", type=click.IntRange(min=1), default=5000, show_default=True)
@device_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/sensitivity", show_default=True)
@_one_line_errors
def sensitivity(checkpoint, ratios, groups, data_dir, split, val_size, device, out_dir):
    """Li et al.'s sensitivity analysis: prune each channel group alone at several ratios (resumes when rerun)."""
    from .. import workflows

    table = workflows.sensitivity_checkpoint(checkpoint, ratios=_floats(ratios, "--ratios"), data_dir=data_dir,
                                             split=split, val_size=val_size, groups=groups, out_dir=out_dir,
                                             device=_device(device))
    rs = sorted({r for row in table["groups"].values() for r in row}, key=float)
    click.echo(f"baseline {100 * table['baseline']:.2f}%\n{'group':<18}" + "".join(f"{float(r):>8.2f}" for r in rs))
    for name, row in table["groups"].items():
        click.echo(f"{name:<18}" + "".join(f"{100 * row[r]:>8.2f}" for r in rs))
    click.echo(f"-> {out_dir}/sensitivity.json, sensitivity.png")
