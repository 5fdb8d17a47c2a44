"""What makes a study trial's fine-tune and evaluation fastest on this machine: memory format, KD,
fake quantization (activations: in place or traceable), evaluation batch size (and torch.compile with --compile), side by side.

Every variant runs the same ResNet-20 on the same synthetic batches, in interleaved rounds (these
machines are noisy: only ratios measured in one run are reported). Images per second, median of
the rounds:

    python benchmarks/finetune_speed.py [--rounds 3 --steps 10] [--compile] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from orchestrator.models import build_model
from orchestrator.pruning import finalize_, prune_
from orchestrator.qformat import attach_act_quant_
from orchestrator.qformat import quantize_tensor
from orchestrator.quant.fake import WeightFakeQuant, fake_quantize_weight_
from orchestrator.pruning.core import prunable_layers


class CheckedFakeQuant(WeightFakeQuant):
    def forward(self, w):
        if self.mask is not None:
            w = w * self.mask
        _, _, q = quantize_tensor(w.detach(), self.bits, self.clip)
        return w + (q - w).detach()


def variants(args, device):
    torch.manual_seed(0)
    base = build_model(args.arch).to(device)
    teacher = copy.deepcopy(base).eval()
    out = {}
    for fmt in ("contiguous", "channels_last"):
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        def pruned():
            return prune_(copy.deepcopy(base), {"method": "global_magnitude", "ratio": 0.7}).to(memory_format=mf)

        student, qat, checked = pruned(), finalize_(pruned()), finalize_(pruned())
        for module in prunable_layers(qat).values():
            fake_quantize_weight_(module, 4)
        for module in prunable_layers(checked).values():  # the weight bits validated in every forward pass
            fake_quantize_weight_(module, 4)        # (before: quantize_tensor's pydantic check per step)
            module.parametrizations.weight[0].__class__ = CheckedFakeQuant
        qat_act = {}  # W4A4: activation fake quantization in place (QAT's path) or as traceable tensor ops,
        for fused, clip in ((True, False), (False, False), (True, True)):  # with max or least-squares ranges
            qat_act[fused, clip] = finalize_(pruned())
            for k, module in enumerate(prunable_layers(qat_act[fused, clip]).values()):
                fake_quantize_weight_(module, 4)
                if k:  # the first conv reads the image
                    attach_act_quant_(module, 4, clip=clip).fused = fused
        t = copy.deepcopy(teacher).to(memory_format=mf)
        for name, model, kd in (("train", student, False), ("train+kd", student, True), ("qat+kd", qat, True),
                                ("qat+kd bits checked per step", checked, True),
                                ("qat a4+kd", qat_act[True, False], True),
                                ("qat a4+kd traceable", qat_act[False, False], True),
                                ("qat a4+kd mse", qat_act[True, True], True)):
            out[f"{name} {fmt}"] = ("train", model, t if kd else None, mf, args.batch_size)
        for bs in args.eval_batches:
            out[f"eval b{bs} {fmt}"] = ("eval", copy.deepcopy(base).eval().to(memory_format=mf), None, mf, bs)
        if args.compile:
            out[f"train compiled {fmt}"] = ("train", torch.compile(pruned()), None, mf, args.batch_size)
    return out


def run(kind, model, teacher, mf, bs, steps, device):
    x = torch.randn(bs, 3, 32, 32, device=device).to(memory_format=mf)
    y = torch.randint(0, 10, (bs,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if kind == "train" else None
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        if kind == "eval":
            with torch.no_grad():
                model(x)
            continue
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / 4, 1)
            loss = 0.1 * loss + 0.9 * 16 * F.kl_div(F.log_softmax(logits / 4, 1), soft, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * bs / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batches", type=int, nargs="+", default=[250, 1000])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile the training step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    vs = variants(args, device)
    for v in vs.values():  # warm-up (and compilation) outside the timing
        run(*v, steps=1, device=device)
    results = {k: [] for k in vs}
    for _ in range(args.rounds):
        for k, v in vs.items():
            results[k].append(run(*v, steps=args.steps if v[0] == "train" else max(2, args.steps // 4), device=device))
    print(f"{args.arch} on {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}); median of {args.rounds} rounds")
    print("| variant | images/s | vs contiguous |\n|---|---:|---:|")
    for k, r in results.items():
        med = statistics.median(r)
        ref = statistics.median(results.get(k.replace("channels_last", "contiguous"), r))
        print(f"| {k} | {med:,.0f} | {med / ref:.2f}x |")


if __name__ == "__main__":
    main()
