"""A compressed model in a runtime nobody here wrote: ExecuTorch (a `.pte` program, XNNPACK delegate).

The model (an export file's reload, or a checkpoint's) is traced by `torch.export` at batch 1 and lowered with
the XNNPACK partitioner. XNNPACK takes the convolutions (BN folded), ReLUs, adds, pooling and the classifier and
runs them in fp32; what it does not take runs on ExecuTorch's portable kernels and is named in the result (the
activation fake-quantization's round/clamp/where, the option-A shortcut's strided slice). The product's weight
formats (1-8 bits per layer, sparse) have no XNNPACK kernel: their dequantized values are stored as fp32, so the
`.pte` is the size of a dense fp32 model, set beside the `.orcx` and the accounted bytes.

With `int8`, the layers whose weights are integer codes of 8 bits or fewer run in XNNPACK's int8 kernels
(PT2E: `XNNPACKQuantizer`, per-channel symmetric weights; activations int8 per tensor, ranges from its own
observers on training images). The codes fit int8, so those weights are kept up to the int8 grid's rounding;
the model's own activation quantizers (k bits, its calibrated ranges) are replaced by XNNPACK's int8 ones,
so the program is a different model from the `.orcx` at activation bits below 8: its accuracy is measured,
not assumed. Layers in a float format (fp32, fp16) stay fp32, and say so.

Checks, on the test set: the runtime's logits against the reference model's (max difference, argmax agreement,
both accuracies); ExecuTorch's memory plan (the planned buffer of the activations) against this product's
liveness peak at the runtime's own width (32 bits per value; 8 with `int8`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .errors import OrchestratorError
from .paths import writable_file

RUNTIMES = {"executorch": "deploy"}  # runtime -> the optional extra that installs it


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError:
        raise OrchestratorError("--to executorch needs ExecuTorch: pip install -e '.[deploy]'") from None
    return XnnpackPartitioner, to_edge_transform_and_lower, Runtime


def _unlowerable(model: nn.Module, example: torch.Tensor) -> str | None:
    """The first leaf layer (in execution order) that torch.export cannot trace alone, with its input."""
    inputs: dict[str, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, a))
             for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    try:
        model(example)
    except Exception:
        pass
    finally:
        for h in hooks:
            h.remove()
    for name, args in inputs.items():
        try:
            torch.export.export(model.get_submodule(name), args)
        except Exception:
            return f"{name} ({type(model.get_submodule(name)).__name__})"
    return None


def _planned(program) -> int:
    return int(sum(program.executorch_program.execution_plan[0].non_const_buffer_sizes))


def int8_layers(model: nn.Module) -> list[str]:
    """The conv/linear layers whose weights are integer codes (int, binary) of at most 8 bits: int8 in XNNPACK."""
    from .pruning.core import prunable_layers
    from .qformat import weight_format, weight_spec

    return [n for n, m in prunable_layers(model).items()
            if (spec := weight_spec(m)) and weight_format(spec[0]).scaled and spec[1] <= 8]


def _int8_graph(model: nn.Module, layers: list[str], calibration, normalization: dict) -> nn.Module:
    """`model` through PT2E for XNNPACK: its int8 `layers` annotated, XNNPACK's observers calibrated on
    `calibration`, converted to quantize/dequantize pairs the partitioner fuses into int8 kernels."""
    import copy

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    from .loader import DeviceLoader
    from .pruning.core import prunable_layers
    from .qformat import detach_act_quant_

    model = copy.deepcopy(model).eval()
    for m in model.modules():  # XNNPACK's int8 activations replace the model's own fake quantization
        detach_act_quant_(m)
    # global, with the float layers filtered out by name: a name filter on the int8 layers alone would miss the
    # fused conv + ReLU patterns, whose functional ReLU belongs to the enclosing block
    floats = [get_module_name_filter(n) for n in prunable_layers(model) if n not in layers]
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda node: not any(f(node) for f in floats))
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph = torch.export.export(model, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},)).module()
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x, _ in DeviceLoader(calibration, 64, normalization["mean"], normalization["std"]):
            graph(x)
    return convert_pt2e(graph)


def lower(model: nn.Module, calibration=None, normalization: dict | None = None) -> tuple[bytes, dict]:
    """(the `.pte` program, what it planned) of `model` at batch 1: {'planned_activation_bytes': ExecuTorch's
    memory plan of every intermediate tensor, from the same graph lowered without a delegate (XNNPACK keeps the
    tensors inside a delegated run in a workspace of its own, outside the plan); 'delegate_planned_bytes': the
    deployed program's plan (the tensors between delegated runs); 'portable_ops': what runs outside XNNPACK;
    'int8_layers'}. With `calibration` (a split), the int8 program (module docstring)."""
    XnnpackPartitioner, to_edge_transform_and_lower, _ = _executorch()
    model = model.eval()
    example = torch.zeros(1, 3, 32, 32)
    layers = int8_layers(model) if calibration is not None else []
    if calibration is not None and not layers:
        raise OrchestratorError("--int8: no layer has integer weights of 8 bits or fewer; quantize the model first "
                                "(orchestrator quantize --bits 8)")
    try:
        graph = model if calibration is None else _int8_graph(model, layers, calibration, normalization)
        program = torch.export.export(graph, (example,))
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        portable = sorted({re.search(r"[\w.]+$", str(n.target).split(">")[0]).group(0)
                           for n in edge.exported_program().graph.nodes
                           if n.op == "call_function" and "delegate" not in str(n.target)
                           and "getitem" not in str(n.target)})
        pte = edge.to_executorch()
        # int8: no plan of the activations alone (the undelegated program dequantizes every weight into a
        # planned fp32 tensor; XNNPACK keeps its int8 maps in its own workspace)
        undelegated = to_edge_transform_and_lower(program).to_executorch() if calibration is None else None
    except Exception as exc:
        layer = _unlowerable(model, example)
        where = f"layer {layer}" if layer else "the model"
        raise OrchestratorError(f"cannot lower {where} to executorch: {type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0][:200]}") from None
    planned = None if undelegated is None else _planned(undelegated)
    return pte.buffer, {"planned_activation_bytes": planned, "delegate_planned_bytes": _planned(pte),
                        "portable_ops": portable, "int8_layers": layers}


@torch.no_grad()
def compare(pte_path, model: nn.Module, split, normalization: dict) -> dict:
    """The runtime's logits against `model`'s on `split`, one image at a time (the program's batch)."""
    from .loader import DeviceLoader

    _, _, Runtime = _executorch()
    method = Runtime.get().load_program(str(pte_path)).load_method("forward")
    model = model.eval()
    diff, agree, right_rt, right_ref, n = 0.0, 0, 0, 0, 0
    for x, y in DeviceLoader(split, 250, normalization["mean"], normalization["std"]):
        ref = model(x)
        got = torch.cat([method.execute([x[i:i + 1].contiguous()])[0] for i in range(len(x))])
        diff = max(diff, (got - ref).abs().max().item())
        agree += (got.argmax(1) == ref.argmax(1)).sum().item()
        right_rt += (got.argmax(1) == y).sum().item()
        right_ref += (ref.argmax(1) == y).sum().item()
        n += len(y)
    return {"images": n, "max_logit_diff": diff, "argmax_agreement": agree / n, "runtime_acc": right_rt / n,
            "reference_acc": right_ref / n}


def deploy(path, out=None, to: str = "executorch", data_dir=None, images: int | None = None,
           int8: bool = False, calibration_images: int = 256) -> dict:
    """Lower the model at `path` (.orcx or checkpoint) for `to`, write `out` (default: beside it, `.pte`) and
    check it on the first `images` test images (all by default); `int8`: its int8 layers in int8 kernels,
    activation ranges from the first `calibration_images` training images."""
    from .checkpoint import load_any
    from .data import load_split
    from .footprint import measure
    from .pruning.core import prunable_layers

    if to not in RUNTIMES:
        raise OrchestratorError(f"--to {to!r} is not a runtime this knows; allowed: {', '.join(RUNTIMES)}")
    _executorch()
    model, dataset, normalization = load_any(path)
    out = writable_file(out if out else Path(path).with_suffix(".pte"))  # before minutes of lowering
    test = load_split(dataset, "test", data_dir)  # read before minutes of lowering: a bad data dir fails first
    if images is not None:
        test = test.head(images)
    calibration = load_split(dataset, "train", data_dir).head(calibration_images) if int8 else None
    buffer, lowered = lower(model, calibration, normalization)
    out.write_bytes(buffer)
    fp32, at8, own = measure(model, act_bits=32), measure(model, act_bits=8), measure(model)
    return {"pte": str(out), "pte_bytes": len(buffer), "source": str(path), "source_bytes": Path(path).stat().st_size,
            "accounted_param_bytes": own.param_bits / 8, "runtime_activation_bits": 8 if int8 else 32,
            "liveness_peak_bytes_fp32": fp32.activation_peak_bits / 8,
            "liveness_peak_bytes_int8": at8.activation_peak_bits / 8,
            "liveness_peak_bytes_own": own.activation_peak_bits / 8,
            "float_layers": [n for n in prunable_layers(model) if n not in lowered["int8_layers"]], **lowered,
            **compare(out, model, test, normalization)}


__all__ = ["RUNTIMES", "compare", "deploy", "int8_layers", "lower"]
