#!/usr/bin/env bash
# GPU check of the trainer (not run in CI: it needs a CUDA GPU with DeepSpeed installed).
# 1. bench/train_throughput.py for the 125m and 1b configs: bf16, ZeRO-2, one GPU, with MFU.
# 2. the whole core line on the GPU: tokenizer → pack → `gptnl train` (bf16, NCCL) → export →
#    transformers on the GPU agrees with our model on the exported weights.
# Results go to $OUT (default: bench/results/gpu).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
W=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"

$PY bench/train_throughput.py --model configs/model/125m.yaml --seq-len 2048 --batch 8 --steps 10 --blocks 3 \
  --out "$OUT/throughput_125m.json" || echo "FAILED: throughput 125m"
$PY bench/train_throughput.py --model configs/model/1b.yaml --seq-len 2048 --batch 4 --steps 5 --blocks 3 \
  --out "$OUT/throughput_1b.json" || echo "FAILED: throughput 1b"

$PY -m gptnl tokenizer train data_pipeline/sample --vocab-size 8000 --out "$W/tok" &&
$PY -m gptnl pack data_pipeline/sample --tokenizer "$W/tok" --seq-len 1024 --out "$W/shards" --val-fraction 0.1 &&
$PY -m gptnl train configs/train/125m.yaml --run-dir "$W/run" --shards "$W/shards" --max-steps 60 --no-progress &&
cp "$W/run/metrics.jsonl" "$OUT/metrics_125m.jsonl" &&
$PY -m gptnl export "$W/run" --out "$W/model" &&
$PY - "$W/model" <<'PY' || echo "FAILED: trainer line"
import sys, torch, transformers
from gptnl.hf import load_pretrained
path = sys.argv[1]
tok = transformers.AutoTokenizer.from_pretrained(path)
hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
ours = load_pretrained(path).cuda().eval()
ids = tok("De gemeente heeft besloten om de weg te vernieuwen.", return_tensors="pt").input_ids.cuda()
with torch.no_grad():
    diff = (hf(ids).logits - ours(ids)).abs().max().item()
print(f"export on GPU: max |logits(HF) - logits(gptnl)| = {diff:.2e} (fp32, TF32 matmuls allowed: {torch.backends.cuda.matmul.allow_tf32})")
PY
