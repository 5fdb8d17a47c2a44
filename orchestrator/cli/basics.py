"""Foundation commands: train, eval, models, footprint, export, import, data check."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import OrchestratorError
from .common import _device, _one_line_errors, data_dir_option, device_option, main


@main.command()
@click.option("--arch", default="resnet20", show_default=True, help="Model name (see `orchestrator models`).")
@click.option("--dataset", type=click.Choice(["cifar10", "cifar100"]), default="cifar10", show_default=True)
@data_dir_option
@click.option("--init", "init_path", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint (orchestrator or public CIFAR ResNet format): fine-tune.")
@click.option("--width-mult", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Width multiplier applied to the default widths (ignored with --init).")
@click.option("--epochs", type=click.IntRange(min=0), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate.")
@click.option("--schedule", type=click.Choice(["onecycle", "cosine", "constant"]), default="onecycle",
              show_default=True)
@click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.15, show_default=True,
              help="Fraction of steps with a linear learning-rate ramp.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--cutout", type=click.IntRange(0, 32), default=0, show_default=True, help="Cutout side, pixels.")
@click.option("--val-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Hold out the last N training images and report accuracy on them (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--compile/--no-compile", default=False, show_default=True, help="torch.compile the model.")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), default="runs/model.pt", show_default=True,
              help="Checkpoint to write; training state for resuming is kept beside it until done.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@_one_line_errors
def train(arch, dataset, data_dir, init_path, width_mult, epochs, batch_size, lr, schedule, warmup,
          weight_decay, label_smoothing, cutout, val_size, seed, compile, device, out, quiet):
    """Train (or fine-tune with --init) a model and evaluate it on the test set."""
    from .. import workflows
    from ..train import TrainConfig

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, warmup=warmup,
                         weight_decay=weight_decay, label_smoothing=label_smoothing, cutout=cutout,
                         seed=seed, compile=compile)
    ckpt = workflows.train_model(arch=arch, dataset=dataset, data_dir=data_dir, config=config, out=out,
                                 init=init_path, width_mult=width_mult, val_size=val_size,
                                 device=_device(device), progress=not quiet)
    m = ckpt.metrics
    click.echo(f"{ckpt.arch} {dataset}: test accuracy {100 * m['test_acc']:.2f}% "
               f"({m['train_seconds'] / 60:.1f} min) -> {out}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@data_dir_option
@click.option("--split", type=click.Choice(["test", "train", "val"]), default="test", show_default=True,
              help="val: the last --val-size training images.")
@click.option("--val-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--npz", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on arrays x_test/y_test (N,32,32,3 uint8) of an .npz file instead.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_one_line_errors
def eval_(checkpoint, data_dir, split, val_size, npz, device, as_json):
    """Evaluate a checkpoint: top-1 accuracy and loss."""
    from .. import workflows

    result = workflows.evaluate_checkpoint(checkpoint, data_dir=data_dir, split=split, val_size=val_size,
                                           npz=npz, device=_device(device))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['arch']} on {result['split']} ({result['n']:,} images): "
                   f"accuracy {100 * result['acc']:.2f}%, loss {result['loss']:.4f}")


@main.command()
@click.option("--num-classes", type=click.IntRange(min=2), default=10, show_default=True)
@_one_line_errors
def models(num_classes):
    """List the model zoo with parameter counts."""
    from ..models import ARCHITECTURES, build_model, count_parameters, describe

    click.echo(f"{'arch':<12} {'parameters':>12}  notes")
    for arch in ARCHITECTURES:
        n = count_parameters(build_model(arch, num_classes))
        click.echo(f"{arch:<12} {n:>12,}  {describe(arch)}")
    click.echo("Any ResNet depth 6n+2 works too (resnet8, resnet1202, ...). Counts: weights, biases, BN affine.")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--batch", type=int, default=1, show_default=True, help="Images per inference (>= 1).")
@click.option("--act-bits", type=int, default=None,
              help="Bits per activation value (2..16, or 32: float; default: the model's own, else 32).")
@click.option("--json", "as_json", is_flag=True, help="Print the footprint as JSON.")
@click.option("--layers/--no-layers", default=True, show_default=True, help="Print the per-tensor table.")
@_one_line_errors
def footprint(path, batch, act_bits, as_json, layers):
    """Memory footprint of a checkpoint or export: parameter bits, peak activations, MACs."""
    from ..checkpoint import load_any
    from ..footprint import format_report, measure

    model, _, _ = load_any(path)
    fp = measure(model, batch=batch, act_bits=act_bits)
    click.echo(fp.model_dump_json(indent=1) if as_json else format_report(fp, per_layer=layers))


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@_one_line_errors
def export_(checkpoint, out):
    """Write a checkpoint as a compact file (packed bits, sparse encodings) and compare with the accounting."""
    from ..checkpoint import load_any
    from ..footprint.export import export

    model, dataset, normalization = load_any(checkpoint)
    info = export(model, out, dataset=dataset, normalization=normalization)
    click.echo(f"{out}: {info['file_bytes']:,} bytes = payload {info['payload_bytes']:,} + header "
               f"{info['header_bytes']:,}; accounted parameters {info['accounted_bytes']:,.1f} bytes "
               f"(payload/accounted {info['payload_bytes'] / info['accounted_bytes']:.4f})")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--to", "runtime", default="executorch", show_default=True,
              help="Runtime: executorch (a .pte program, XNNPACK delegate).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Program file (default: PATH with .pte).")
@data_dir_option
@click.option("--images", type=click.IntRange(min=1), default=None,
              help="Test images the runtime is checked on (default: all).")
@click.option("--int8", is_flag=True,
              help="Run the layers with integer weights of <= 8 bits in XNNPACK's int8 kernels (activations int8 at "
                   "ranges XNNPACK's quantizer calibrates); default: every layer in fp32, the .orcx's exact values.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=None,
              help="With --int8: training images the activation ranges are calibrated on (default 256).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--mlflow", "tracking_uri", default=None, metavar="URI",
              help="Log the program and its checks to the MLflow run of the study trial that exported PATH "
                   "(found by the file's hash) at this tracking URI ('default': MLflow's own).")
@click.option("--mlflow-run", "run_id", default=None, help="With --mlflow: log to this run instead.")
@_one_line_errors
def deploy(path, runtime, out, data_dir, images, int8, calibration_images, as_json, tracking_uri, run_id):
    """Run a model (.orcx or checkpoint) in a real runtime: its logits checked against the reference on the
    test set, its planned activation memory set beside the liveness peak, its file beside the .orcx."""
    from ..deploy import deploy as deploy_

    if run_id and not tracking_uri:
        raise OrchestratorError("--mlflow-run names a run of an MLflow store: give --mlflow URI too")
    if calibration_images is not None and not int8:
        raise OrchestratorError("--calibration-images calibrates the int8 program: give --int8 too")
    if tracking_uri:  # the run is found before minutes of lowering and checking
        from ..study.tracking import log_deployment, run_of_export

        if not Path(path).is_file():
            raise OrchestratorError(f"{path}: no such file")
        client, run_id = run_of_export(None if tracking_uri == "default" else tracking_uri, path, run_id)
    r = deploy_(path, out, runtime, data_dir, images, int8, calibration_images or 256)
    if tracking_uri:
        key = f"{runtime}-int8" if int8 else runtime  # the fp32 and the int8 program of one run kept apart
        try:
            log_deployment(client, run_id, r, key)
        except Exception as exc:  # the program is written: say where it is and why it is not in the run
            raise OrchestratorError(f"{r['pte']} written, but logging it to MLflow run {run_id} failed: "
                                    f"{str(exc).strip().splitlines()[0][:200]}") from None
        r["mlflow_run_id"], r["mlflow_artifacts"] = run_id, f"deploy/{key}"
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    held = (f"int8 weights in {len(r['int8_layers'])} layers, fp32 in {len(r['float_layers'])}" if int8
            else "the program holds fp32 weights")
    click.echo(f"{r['pte']}: {r['pte_bytes']:,} bytes (source {r['source_bytes']:,} bytes, accounted parameters "
               f"{r['accounted_param_bytes']:,.0f} bytes; {held})")
    click.echo(f"test ({r['images']:,} images): runtime {100 * r['runtime_acc']:.2f}%, reference "
               f"{100 * r['reference_acc']:.2f}%, argmax agreement {100 * r['argmax_agreement']:.2f}%, "
               f"max logit difference {r['max_logit_diff']:.2e}")
    bits = r["runtime_activation_bits"]
    peak = r["liveness_peak_bytes_int8" if bits == 8 else "liveness_peak_bytes_fp32"]
    planned = r["planned_activation_bytes"]
    planned = f"{planned:,} bytes" if planned is not None else "(int8: kept in XNNPACK's own workspace)"
    click.echo(f"activations: planned by the runtime {planned}, liveness peak at "
               f"{bits} bits {peak:,.0f} bytes (at the "
               f"model's own bits {r['liveness_peak_bytes_own']:,.0f})")
    click.echo(f"outside the XNNPACK delegate (portable kernels): {', '.join(r['portable_ops']) or 'nothing'}")
    if tracking_uri:
        click.echo(f"logged to MLflow run {run_id} ({r['mlflow_artifacts']}/)")


@main.command("import")
@click.argument("export_file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@_one_line_errors
def import_(export_file, out):
    """Rebuild a checkpoint from an export file (to fine-tune or evaluate it)."""
    from ..checkpoint import from_model, save_checkpoint
    from ..footprint.export import load_export

    model, header = load_export(export_file)
    save_checkpoint(out, from_model(model, header["dataset"], header["normalization"] or {},
                                    {"imported_from": str(export_file)}))
    click.echo(f"{out}: {model.arch} rebuilt from {export_file}")


@main.group()
def data():
    """Dataset utilities."""


@data.command("check")
@click.option("--dataset", type=click.Choice(["cifar10", "cifar100"]), default="cifar10", show_default=True)
@data_dir_option
@click.option("--download/--no-download", default=True, show_default=True,
              help="Download the official archive when the folder is missing.")
@_one_line_errors
def data_check(dataset, data_dir, download):
    """Validate a data directory: files, shapes, dtype, label range, counts."""
    from ..data import load_split, resolve_data_dir

    root = resolve_data_dir(data_dir)
    for split in ("train", "test"):
        s = load_split(dataset, split, root, download=download)
        counts = s.labels.bincount(minlength=s.num_classes)
        click.echo(f"{s.name}: {len(s):,} images, {s.num_classes} classes "
                   f"(per class {counts.min().item():,}..{counts.max().item():,}), "
                   f"mean RGB {[round(v, 4) for v in (s.images.float().mean((0, 2, 3)) / 255).tolist()]}")
        for note in s.notes:
            click.echo(f"  note: {note}")
    click.echo(f"ok: {dataset} in {root}")
