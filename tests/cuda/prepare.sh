#!/bin/bash
# Prepares .cuda-check/ (git-ignored) for tests/cuda/run.sh on a GPU machine that has a CUDA libtorch (python's
# torch) but not Debian's Abseil: copies Abseil's headers and the shared libraries the engine's status types need.
set -e
cd "$(dirname "$0")/../.."
grep -q "^/.cuda-check/" "$(git rev-parse --git-path info/exclude)" || echo "/.cuda-check/" >>"$(git rev-parse --git-path info/exclude)"
mkdir -p .cuda-check/inc .cuda-check/lib
rm -rf .cuda-check/inc/absl && cp -r /usr/include/absl .cuda-check/inc/absl
libs="/lib/x86_64-linux-gnu/libabsl_statusor.so.20220623 /lib/x86_64-linux-gnu/libabsl_status.so.20220623 /lib/x86_64-linux-gnu/libabsl_strings.so.20220623"
for l in $libs $(ldd $libs | grep -o "/[^ ]*libabsl[^ ]*\.so\.[0-9]*" | sort -u); do
  cp -L "$l" .cuda-check/lib/
  base=$(basename "$l"); cp -L "$l" ".cuda-check/lib/${base%.20220623}"
done
echo "ready: run tests/cuda/run.sh on the GPU machine, carrying .cuda-check"
