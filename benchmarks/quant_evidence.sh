#!/usr/bin/env bash
# Evidence for quantization, distillation and pipelines (docs/quantization.md), one job at a time.
# Steps whose output exists are skipped, so the script can be rerun after a kill.
#   bash benchmarks/quant_evidence.sh DATA_DIR R20_CHECKPOINT [OUT]
# PARTS="ptq kd combined qat" (the default) picks which groups run, in that order.
set -euo pipefail
D=${1:?data dir}; R20=${2:?resnet20 checkpoint}; OUT=${3:-runs/evidence}
PY="${PYTHON:-.venv/bin/python}"
O="$PY -m orchestrator.cli"
mkdir -p "$OUT"
step() { local out=$1; shift; if [ -e "$out" ]; then echo "skip $out"; else echo "+ $*"; "$@"; fi; }
Q="--val-size 0 --data-dir $D --quiet"
PARTS=${PARTS:-ptq kd combined qat}
part() { [[ " $PARTS " == *" $1 "* ]]; }

if part ptq; then
# Accuracy vs weight bits, post-training (first conv and classifier keep 8 bits unless stated).
step "$OUT/q-ptq-fp16.pt" $O quantize "$R20" --bits 16 $Q --out "$OUT/q-ptq-fp16.pt"
for b in 8 4 3 2; do step "$OUT/q-ptq-w$b.pt" $O quantize "$R20" --bits $b $Q --out "$OUT/q-ptq-w$b.pt"; done
step "$OUT/q-ptq-binary.pt" $O quantize "$R20" --bits 1 $Q --out "$OUT/q-ptq-binary.pt"
step "$OUT/q-ptq-w8a8.pt" $O quantize "$R20" --bits 8 --act-bits 8 $Q --out "$OUT/q-ptq-w8a8.pt"
fi
if part kd; then
# KD vs no KD after 80% unstructured pruning, same fine-tune budget (1 epoch); teacher = the dense ResNet-20.
step "$OUT/kd-off.pt" $O prune "$R20" --method global_magnitude --ratio 0.8 --finetune-epochs 1 --val-size 0 \
  --data-dir "$D" --out "$OUT/kd-off.pt" --quiet
step "$OUT/kd-on.pt" $O prune "$R20" --method global_magnitude --ratio 0.8 --finetune-epochs 1 --teacher "$R20" \
  --val-size 0 --data-dir "$D" --out "$OUT/kd-on.pt" --quiet
fi
if part combined; then
# One combined pipeline: 50% filters + 80% weights + 4-bit QAT (8-bit activations), KD throughout.
step "$OUT/combined.pt" $O pipeline benchmarks/combined_pipeline.yaml --base "$R20" $Q \
  --out "$OUT/combined.pt"
fi
if part qat; then
# Weight bits with one epoch of quantization-aware training.
for b in 4 2; do
  step "$OUT/q-qat-w$b.pt" $O quantize "$R20" --method qat --bits $b --finetune-epochs 1 $Q --out "$OUT/q-qat-w$b.pt"
done
step "$OUT/q-qat-binary.pt" $O quantize "$R20" --method qat --bits 1 --finetune-epochs 1 $Q --out "$OUT/q-qat-binary.pt"
step "$OUT/q-qat-w4a4.pt" $O quantize "$R20" --method qat --bits 4 --act-bits 4 --finetune-epochs 1 $Q --out "$OUT/q-qat-w4a4.pt"
fi
