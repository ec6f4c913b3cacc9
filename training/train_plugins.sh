#!/usr/bin/env bash
# Trains the plugin models shipped beside the embedded model, reproducibly (fixed seeds), each in the released files'
# layout at tiny widths, and writes them to assets/models/{RIFE,ControlNet,AnimateDiff}; then prints each one's
# held-out checks (PyTorch). Resumable: rerun after an interruption and each run continues from its checkpoint in
# $RUN/<name>. Needs Debian's python3-torch, python3-numpy, python3-pil, python3-opencv, and the embedded model.
#
#   training/train_plugins.sh [RUN_DIR]     (default training/runs; budgets and times in training/README.md)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${1:-$here/runs}"
models="$here/../assets/models"
py=/usr/bin/python3
mkdir -p "$run/rife" "$run/cn-canny" "$run/cn-seg" "$run/motion"
# The models must compute what the references (and the plugins) compute: the fixtures' plugin cases through them.
"$py" "$here/plugin_parity_check.py" --fixtures "${ATELIER_FIXTURES:-$here/../../shared/fixtures}"
"$py" "$here/train_rife.py" --run "$run/rife" --steps "${RIFE_STEPS:-1200}" --batch 16 2>&1 | tee -a "$run/rife/train.log"
"$py" "$here/train_rife.py" --run "$run/rife" --export "$models/RIFE/atelier-rife46-shapes.safetensors"
for hint in canny seg; do
  "$py" "$here/train_controlnet.py" --hint $hint --run "$run/cn-$hint" --steps "${CN_STEPS:-2500}" --lr 5e-4 --batch 16 2>&1 |
    tee -a "$run/cn-$hint/train.log"
  "$py" "$here/train_controlnet.py" --hint $hint --run "$run/cn-$hint" \
    --export "$models/ControlNet/atelier-shapes-$hint.safetensors"
done
"$py" "$here/train_motion.py" --run "$run/motion" --steps "${MOTION_STEPS:-3500}" --clips 1600 2>&1 |
  tee -a "$run/motion/train.log"
# Then for 16-frame clips, each stage continuing the last (its cosine restarted over the new total): 8- and 16-frame
# clips in turns, then 16-frame ones twice as often with more clips, growing ones more often (training/README.md).
for stage in "6500 8,16 0 0" "9500 8,16 0 0" "12500 8,16,16 400 0.5" "15000 8,16,16 800 0.6"; do
  read -r steps frames extra share <<< "$stage"
  "$py" "$here/train_motion.py" --run "$run/motion" --steps "$steps" --clips 1600 --frames "$frames" \
    --extra-clips "$extra" --growing-share "$share" 2>&1 | tee -a "$run/motion/train.log"
done
"$py" "$here/train_motion.py" --run "$run/motion" --export "$models/AnimateDiff/atelier-shapes-motion-v2.safetensors"
"$py" "$here/train_rife.py" --eval "$models/RIFE/atelier-rife46-shapes.safetensors"
for hint in canny seg; do
  "$py" "$here/train_controlnet.py" --hint $hint --eval "$models/ControlNet/atelier-shapes-$hint.safetensors"
done
"$py" "$here/train_motion.py" --eval "$models/AnimateDiff/atelier-shapes-motion-v2.safetensors"
