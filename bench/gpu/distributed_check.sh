#!/usr/bin/env bash
# One device run: install the Celery stack from carried wheels, then check.py on the GPU.
# The carry folder .gpu/distributed/ (git-ignored) is built here by bench/gpu/prepare.sh: whl/
# (wheels for Python 3.12 of what the device lacks) and redis/ (a redis-server wrapper with its
# own libraries). Run: bash bench/gpu/distributed_check.sh with carry [".gpu/distributed"].
set -u
OUT=${OUT:-.gpu/distributed/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/distributed/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
chmod +x .gpu/distributed/redis/redis-server .gpu/distributed/redis/bin/redis-server
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, celery, kombu; print('torch', torch.__version__, 'transformers', transformers.__version__, 'celery', celery.__version__, 'cuda', torch.cuda.is_available())"
timeout 420 python3 bench/gpu/distributed_check.py cuda 2>&1 | tail -80
