#!/usr/bin/env bash
# One prepared GPU check (run where a CUDA GPU is present): environment, the extraction tests,
# then bench/extract.py in bf16 on the demo model and on a GPT-2-small-sized model from a config.
# Writes a log and JSON figures to ${OUT:-.gpu-out}.
set -u
OUT=${OUT:-.gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, h5py; print('torch', torch.__version__, 'transformers', transformers.__version__, 'h5py', h5py.__version__, 'cuda', torch.cuda.is_available())"
  python3 -m pytest -q -p no:cacheprovider tests/test_extract.py tests/test_pipeline.py -k "not demo and not sigkill and not rerun" 2>&1 | tail -3
  python3 bench/extract.py --device cuda --dtype bfloat16 --threads 16 --naive-rounds 2 --json "$OUT/demo_bf16.json"
  python3 bench/extract.py --model gpt2-small --device cuda --dtype bfloat16 --threads 16 --naive-rounds 1 --json "$OUT/gpt2s_bf16_b64.json"
  python3 bench/extract.py --model gpt2-small --device cuda --dtype bfloat16 --threads 16 --naive-rounds 0 --batch-size 256 --json "$OUT/gpt2s_bf16_b256.json" 2>&1 | grep -v "naive"
} 2>&1 | tee "$OUT/log.txt"
