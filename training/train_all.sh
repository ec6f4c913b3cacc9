#!/usr/bin/env bash
# Trains the embedded model from nothing, reproducibly (fixed seeds), and writes it to
# assets/models/Stable-diffusion/atelier-shapes.{safetensors,yaml}. Resumable: rerun after an interruption and each
# stage continues from its last checkpoint in $RUN. Needs Debian's python3-torch, python3-numpy, python3-pil.
#
#   training/train_all.sh [RUN_DIR]        (default training/runs/main; ~25 min VAE + ~70 min UNet on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${1:-$here/runs/main}"
mkdir -p "$run"
py=/usr/bin/python3
# The modules must compute what the engine computes (the fixtures' tiny checkpoint through them).
"$py" "$here/parity_check.py" --fixtures "${ATELIER_FIXTURES:-$here/../../shared/fixtures}"
"$py" "$here/train_vae.py" --run "$run" --steps "${VAE_STEPS:-4500}" 2>&1 | tee -a "$run/vae.log"
"$py" "$here/train_ldm.py" --run "$run" --steps "${LDM_STEPS:-6500}" --lr 8e-4 2>&1 | tee -a "$run/ldm.log"
"$py" "$here/export.py" --run "$run" --out "$here/../assets/models/Stable-diffusion/atelier-shapes"
