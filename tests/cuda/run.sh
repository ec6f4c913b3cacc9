#!/bin/bash
# CUDA check (not part of ctest; needs a GPU and a CUDA libtorch, and tests/cuda/prepare.sh run first). Builds the image-model sources against the machine's CUDA libtorch (from python's torch) and runs cuda_smoke.
set -e
cd "$(dirname "$0")/../.."
TORCH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")
ABI=$(python3 -c "import torch;print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
python3 -c "import torch;print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
mkdir -p /tmp/cc
FLAGS="-O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=$ABI -Idaemon -I.cuda-check/gen -I.cuda-check/inc -I$TORCH/include -I$TORCH/include/torch/csrc/api/include"
for f in daemon/engine/models/nn_util.cc daemon/engine/models/nn_layers.cc daemon/engine/models/unet.cc daemon/engine/models/vae.cc tests/cuda/cuda_smoke.cc; do
  g++ $FLAGS -c $f -o /tmp/cc/$(basename $f).o &
done
wait
g++ /tmp/cc/*.o -o /tmp/cc/cuda_smoke -L$TORCH/lib -L.cuda-check/lib -Wl,--no-as-needed -ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 \
  -labsl_statusor -labsl_status -labsl_strings -Wl,-rpath,$TORCH/lib -Wl,-rpath,$PWD/.cuda-check/lib
LD_LIBRARY_PATH=$PWD/.cuda-check/lib:$TORCH/lib /tmp/cc/cuda_smoke
# Noise sources: the CUDA generator against WebUI's Philox emulation.
mkdir -p /tmp/cc/noise
for f in daemon/engine/sampling/noise.cc daemon/engine/sampling/philox.cc tests/cuda/cuda_noise.cc; do
  g++ $FLAGS -c $f -o /tmp/cc/noise/$(basename $f).o &
done
wait
g++ /tmp/cc/noise/*.o /tmp/cc/nn_util.cc.o -o /tmp/cc/cuda_noise -L$TORCH/lib -L.cuda-check/lib -Wl,--no-as-needed -ltorch \
  -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10 -labsl_statusor -labsl_status -labsl_strings -Wl,-rpath,$TORCH/lib \
  -Wl,-rpath,$PWD/.cuda-check/lib
LD_LIBRARY_PATH=$PWD/.cuda-check/lib:$TORCH/lib /tmp/cc/cuda_noise
nvidia-smi --query-gpu=name,memory.used --format=csv
