"""What every command module shares: the `main` group, one-line errors, the device and data-dir options,
YAML config files. Command modules import from here only, never from each other or from the package
`__init__`, so the CLI has no import cycle."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import click
from pydantic import ValidationError

from ..errors import OrchestratorError, describe_validation


def _one_line_errors(fn):
    """User errors (bad files, values, configs) end as one 'Error: ...' line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OrchestratorError as exc:
            raise click.ClickException(str(exc)) from None
        except ValidationError as exc:
            raise click.ClickException(describe_validation(exc)) from None

    return wrapper


def _device(name: str):
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise OrchestratorError("--device cuda was asked for, but no CUDA GPU is available; allowed here: cpu, auto")
    return name


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Folder holding cifar-10-batches-py/ or cifar-100-python/ "
         "(default: $ORCHESTRATOR_DATA_DIR, else ./data; downloaded there when missing and online).")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where to run; auto picks CUDA when present.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orchestrator")
def main():
    """Best CIFAR accuracy for the smallest memory footprint: train, compress, measure, search."""
    log = logging.getLogger("orchestrator")
    if not any(isinstance(h, _Echo) for h in log.handlers):  # the library's progress lines (auto start points,
        log.addHandler(_Echo())  # repeats answered from records), and its warnings, once each on stderr
        log.setLevel(logging.INFO)
        log.propagate = False


class _Echo(logging.Handler):
    """Log records as plain lines on the current stderr (resolved per line: click's test runner swaps it)."""

    def emit(self, record):
        click.echo(record.getMessage(), err=True)


class Bits(click.ParamType):
    """Integer bits checked by the one rule configs use (`qformat.WeightBits`, or `qformat.ActBits` for
    activations); 'none' allowed where it means "not set"."""

    name = "bits"

    def __init__(self, allow_none: bool = False, activations: bool = False):
        self.allow_none, self.activations = allow_none, activations

    def convert(self, value, param, ctx):
        from ..qformat import ActBits, WeightBits
        from ..values import check

        if value is None or isinstance(value, int):
            return value
        if self.allow_none and str(value).strip().lower() == "none":
            return None
        text = str(value).strip()
        try:
            kind = ActBits if self.activations else WeightBits
            return check(kind, int(text) if text.lstrip("-").isdigit() else text, param.opts[0] if param else "bits")
        except OrchestratorError as exc:
            self.fail(str(exc), param, ctx)


def read_yaml(path, what: str) -> dict:
    """A mapping from a YAML file ({} without a file)."""
    from ..yamlio import read_mapping

    return read_mapping(path, what) if path else {}


def with_options(options):
    """Apply a list of click options (shared option sets)."""

    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


def _kb(bits) -> str:
    return f"{bits / 8 / 1024:,.1f}"


def run_and_print(config, base, data_dir, out, device, quiet) -> dict:
    """Run a pipeline (every compression command is one) and print its steps, the result and the files."""
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
    return result
