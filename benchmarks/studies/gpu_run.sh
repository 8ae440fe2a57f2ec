#!/usr/bin/env bash
# The one GPU job: run benchmarks/gpu.yaml on CUDA and copy the results (not the ~2 GB of cached models)
# to $OUT/gpu. Run from the repository root:   bash benchmarks/studies/gpu_run.sh "$OUT"
# Fashion-MNIST: $OBLIVIO_FASHION_MNIST_DIR, else ./data/fashion-mnist (copy the four .gz IDX files
# there before the run if the GPU machine has no /usr/share/datasets/fashion-mnist), else the default.
set -u
OUT=${1:-${OUT:-runs}}
LIMIT=${GPU_BENCH_SECONDS:-540}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${OBLIVIO_FASHION_MNIST_DIR:-}" ] && [ -d data/fashion-mnist ]; then
  export OBLIVIO_FASHION_MNIST_DIR="$PWD/data/fashion-mnist"
fi
mkdir -p "$OUT/gpu"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/gpu/env.txt"
start=$(date +%s)
timeout "$LIMIT" python3 -m oblivio.cli bench --config benchmarks/gpu.yaml --device cuda --out runs/bench/gpu \
  --no-progress 2>&1 | tee "$OUT/gpu/bench.log"
rc=${PIPESTATUS[0]}
echo "exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu/bench.log"
cp runs/bench/gpu/*.md runs/bench/gpu/*.csv runs/bench/gpu/*.json "$OUT/gpu/" 2>/dev/null
cp -r runs/bench/gpu/cells "$OUT/gpu/" 2>/dev/null  # finished cells, even when the run was cut short
exit "$rc"
