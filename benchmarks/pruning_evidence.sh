#!/usr/bin/env bash
# Evidence for the pruning methods (docs/pruning.md), run one job at a time (2-core CPU).
# Every step is resumable or skipped when its output exists, so the script can be rerun after a kill.
#   bash benchmarks/pruning_evidence.sh DATA_DIR R20_CHECKPOINT R56_CHECKPOINT [OUT]
set -euo pipefail
D=${1:?data dir}; R20=${2:?resnet20 checkpoint}; R56=${3:?resnet56 checkpoint}; OUT=${4:-runs/evidence}
PY="${PYTHON:-.venv/bin/python}"
O="$PY -m orchestrator.cli"
mkdir -p "$OUT"
step() { local out=$1; shift; if [ -e "$out" ]; then echo "skip $out"; else echo "+ $*"; "$@"; fi; }

# Method 1: accuracy vs ratio without retraining, global vs layer-wise vs random (ResNet-20, test set).
$O sweep "$R20" --data-dir "$D" --out "$OUT/sweep20"
# Method 2: Han et al., 3 rounds x 1 epoch of retraining at 80% and 90% (compare with the sweep's rows).
for r in 0.8 0.9; do
  step "$OUT/r20-han-$r.pt" $O prune "$R20" --method han --ratio $r --rounds 3 --finetune-epochs 1 --val-size 0 \
    --data-dir "$D" --out "$OUT/r20-han-$r.pt" --quiet
done
# Method 4 vs L1 (and random) filters: half of every block's inner channels, before and after 1 epoch.
for m in l1_filter thinet random_filter; do
  step "$OUT/r20-$m-0.5.pt" $O prune "$R20" --method $m --ratio 0.5 --val-size 0 --data-dir "$D" \
    --out "$OUT/r20-$m-0.5.pt" --quiet
  step "$OUT/r20-$m-0.5-ft1.pt" $O prune "$R20" --method $m --ratio 0.5 --finetune-epochs 1 --val-size 0 \
    --data-dir "$D" --out "$OUT/r20-$m-0.5-ft1.pt" --quiet
done
# Method 3: Li et al.'s sensitivity analysis on ResNet-56 (2,000 held-out training images), then pruned-B.
$O sensitivity "$R56" --data-dir "$D" --val-size 2000 --ratios 0.2,0.5,0.8 --out "$OUT/sens56"
SKIP="--skip layer1.7.conv1 --skip layer1.8.conv1 --skip layer2.0.conv1 --skip layer2.7.conv1 --skip layer3.0.conv1 --skip layer3.8.conv1"
step "$OUT/r56-li-b.pt" $O prune "$R56" --method l1_filter --stage-ratios 0.6,0.3,0.1 $SKIP --val-size 0 \
  --data-dir "$D" --out "$OUT/r56-li-b.pt" --quiet
step "$OUT/r56-li-b-ft1.pt" $O prune "$R56" --method l1_filter --stage-ratios 0.6,0.3,0.1 $SKIP --finetune-epochs 1 \
  --val-size 0 --data-dir "$D" --out "$OUT/r56-li-b-ft1.pt" --quiet
# Real speedup of structured pruning on this CPU.
$PY benchmarks/prune_latency.py | tee "$OUT/latency.txt"
