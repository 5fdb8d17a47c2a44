"""A KD QAT step on ResNet-20, one source tree against another, side by side (issue #27: "a QAT step is
not slower"). Each round runs one child process per tree, alternating, on the same synthetic batches: 4-bit
fake-quantized weights on every prunable layer (pruned 70%, so the masks are live), 4-bit activations with
least-squares ranges, a teacher forward, SGD. Milliseconds per step, median of the rounds:

    git worktree add /tmp/old 28b03b8
    python benchmarks/qat_step_ab.py /tmp/old . [--rounds 5 --steps 20 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import inspect, json, sys, time, torch, torch.nn.functional as F
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1])); steps = int(sys.argv[2])
from orchestrator.models import build_model
from orchestrator.pruning import finalize_, prune_
from orchestrator.pruning.core import prunable_layers
from orchestrator.qformat import attach_act_quant_
from orchestrator.quant.fake import fake_quantize_weight_
teacher = build_model("resnet20").eval()
student = build_model("resnet20"); student.load_state_dict(teacher.state_dict())
prune_(student, {"method": "global_magnitude", "ratio": 0.7}); finalize_(student)
bits = (("int", 4) if "fmt" in inspect.signature(fake_quantize_weight_).parameters else (4,))  # before #27: (format, bits)
for i, m in enumerate(prunable_layers(student).values()):
    fake_quantize_weight_(m, *bits, clip=True)
    if i:
        attach_act_quant_(m, 4, clip=True)
student = student.to(memory_format=torch.channels_last); teacher = teacher.to(memory_format=torch.channels_last)
opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(128, 3, 32, 32).to(memory_format=torch.channels_last); y = torch.randint(0, 10, (128,))
def step():
    with torch.no_grad():
        t = teacher(x)
    s = student(x)
    loss = F.cross_entropy(s, y) + F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
student.train()
for _ in range(3):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"ms": 1000 * (time.perf_counter() - t0) / steps}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", type=Path, help="source trees (each holding orchestrator/)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    ms = {t: [] for t in a.trees}
    for r in range(a.rounds):
        for t in (a.trees if r % 2 == 0 else a.trees[::-1]):  # alternate the order: no tree always runs first
            env = dict(os.environ, PYTHONPATH=str(t.resolve()))
            out = subprocess.run([sys.executable, "-c", CHILD, str(a.threads), str(a.steps)], env=env, check=True,
                                 capture_output=True, text=True, cwd=t).stdout
            ms[t].append(json.loads(out.strip().splitlines()[-1])["ms"])
            print(f"round {r} {t}: {ms[t][-1]:.1f} ms/step", flush=True)
    first = statistics.median(ms[a.trees[0]])
    for t in a.trees:
        med = statistics.median(ms[t])
        print(f"{t}: median {med:.1f} ms/step over {a.rounds} rounds ({med / first:.3f}x {a.trees[0]})")


if __name__ == "__main__":
    main()
