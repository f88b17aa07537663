#!/usr/bin/env bash
# Run here (no GPU needed), before a session's one device run for the distributed checks. Builds
# the git-ignored carry folder .gpu/distributed/ and the 12-checkpoint demo series:
#   whl/     wheels (CPython 3.12) of what the device image lacks: the Celery stack and umap-learn,
#            at the versions this venv holds
#   redis/   redis-server: a wrapper that runs redis/bin/redis-server with the shared libraries it
#            links from redis/lib (the device has no Redis; the libraries stay private to it, so
#            Python and torch never load this machine's libstdc++ or libssl)
#   .bench-cache/demo-12/   the demo model trained with 12 checkpoints (20 would pass 64 MiB)
# Then, on the device, with carry [".gpu/distributed", ".bench-cache/demo-12"]:
#   bash bench/gpu/distributed_check.sh     # the GPU worker: CUDA only in the child, SIGKILL retry
#   bash bench/gpu/pipeline_check.sh        # bench/pipeline.py --device cuda: overlap and overhead
set -euo pipefail
cd "$(dirname "$0")/../.."
D=.gpu/distributed
rm -rf "$D/whl" "$D/redis"
mkdir -p "$D/whl" "$D/redis/bin" "$D/redis/lib"
pins=$(python3 -m pip list --format=freeze 2>/dev/null | grep -i -E '^(celery|kombu|billiard|vine|amqp|redis|click-didyoumean|click-repl|click-plugins|prompt.toolkit|wcwidth|tzlocal|tzdata|umap-learn|pynndescent)==')
echo "$pins" | tr '\n' ' '; echo
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$D/whl" $pins
server=$(command -v redis-server)
cp -L "$server" "$D/redis/bin/redis-server"
ldd "$server" | awk '/=> \// {print $3}' | grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' \
  | xargs -r -I{} cp -L {} "$D/redis/lib/"
cat > "$D/redis/redis-server" <<'SH'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib" exec "$here/bin/redis-server" "$@"
SH
chmod +x "$D/redis/redis-server" "$D/redis/bin/redis-server"
"$D/redis/redis-server" --version
python3 -c "import sys; sys.path.insert(0, 'bench'); from _demo import demo_checkpoints; print(demo_checkpoints(12))"
du -sh "$D" .bench-cache/demo-12
