#!/usr/bin/env bash
# Issue 14's one device run: every GPU figure at once. First, here: bash bench/gpu/prepare.sh; then
# on the device, with carry [".gpu/distributed", ".bench-cache/demo-12"], a timeout of ~540 s:
#   bash bench/gpu/speed_check.sh
#   1. bench/extract.py --model gpt2-small         random init, bf16: every probe decodes (worst case)
#   2. bench/extract.py --model gpt2-small-trained trained 300 steps on the device first, bf16,
#                                                  --profile: realistic decoding and the top operators
#      goal for both: learnviz >= 0.5 of the bare forward's probes/s
#   3. bench/pipeline.py --device cuda             the 12-checkpoint series: total / GPU-stage time <= 1.2
#   4. bench/gpu_memory.py --device cuda           the GPU stage over 30 checkpoints in one process:
#                                                  memory growth <= 5 % (the demo trains with 30
#                                                  checkpoints on the device's CPUs first, ~1 min)
# Logs and JSON figures go to ${OUT:-.gpu-out}; each step has its own timeout so one hang costs one step.
set -u
OUT=${OUT:-.gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .gpu/distributed/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PATH=$PWD/.gpu/distributed/redis:$PATH
chmod +x .gpu/distributed/redis/redis-server .gpu/distributed/redis/bin/redis-server
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  echo "== 1. gpt2-small, random init"
  timeout 120 python3 bench/extract.py --model gpt2-small --device cuda --dtype bfloat16 --threads 16 \
    --naive-rounds 0 --rounds 3 --json "$OUT/gpt2s_random.json"
  echo "== 2. gpt2-small, trained"
  timeout 180 python3 bench/extract.py --model gpt2-small-trained --device cuda --dtype bfloat16 --threads 16 \
    --naive-rounds 0 --rounds 3 --profile --json "$OUT/gpt2s_trained.json"
  echo "== 3. pipeline"
  OUT=$OUT timeout 150 bash bench/gpu/pipeline_check.sh
  echo "== 4. GPU worker memory over 30 checkpoints"
  timeout 150 python3 bench/gpu_memory.py --device cuda --checkpoints 30 --json "$OUT/gpu_memory.json"
} 2>&1 | tee "$OUT/speed_check.log"
