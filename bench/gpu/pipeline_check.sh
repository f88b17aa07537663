#!/usr/bin/env bash
# One device run (see prepare.sh): bench/pipeline.py with the gpu worker on CUDA over the carried
# 12-checkpoint demo series. Writes the log and the figures as JSON to ${OUT:-.gpu/distributed/out}.
set -u
OUT=${OUT:-.gpu/distributed/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/distributed/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PATH=$PWD/.gpu/distributed/redis:$PATH        # the wrapper: its libraries stay private to it
chmod +x .gpu/distributed/redis/redis-server .gpu/distributed/redis/bin/redis-server
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
redis-server --version
timeout 500 python3 bench/pipeline.py --device cuda --checkpoints 12 --cpu-workers 4 --json "$OUT/pipeline_cuda.json" 2>&1 | tee "$OUT/pipeline.log" | tail -40
