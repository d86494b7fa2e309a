#!/usr/bin/env bash
# The GPU figure of README "Speed": training images/s of ConvNeXtV2-Tiny (random init) at 224 px, bf16,
# channels_last on one CUDA GPU, for model_only / hfgal / baseline (see benchmarks/throughput.py). A few minutes.
#
#   bash benchmarks/gpu_throughput.sh                 # from anywhere; BATCH, STEPS, WARMUP, WORKERS override
#   WORKERS=4 bash benchmarks/gpu_throughput.sh       # hfgal and baseline always get the same worker count
#   bash benchmarks/gpu_throughput.sh --compile       # extra flags go to throughput.py
#
# The synthetic data and the uint8 cache stay in $HFGAL_THROUGHPUT_DIR (default /tmp/hfgal-throughput), so a
# second run (another WORKERS, --compile) skips generating them.
#
# hfgal is installed with --no-deps so the machine's own torch / transformers stay as they are. A machine without
# the `datasets` package (and its dill / multiprocess) and no network installs them from wheels in $HFGAL_WHEELS
# (default: .wheels in the repository), prepared on a connected machine with:
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .wheels \
#       "datasets>=4" "dill<0.4.2" "multiprocess<0.70.20"
# It prints the table, the projected 30-epoch GZ10 time, and last the JSON record.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${HFGAL_WHEELS:-.wheels}

if ! "$PYTHON" -c "import datasets" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --quiet --no-deps --no-index "$WHEELS"/*.whl
    else
        echo "gpu_throughput.sh: error: the datasets package is missing and $WHEELS holds no wheels; see the header" >&2
        exit 1
    fi
fi
"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e .

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch, transformers, datasets; print('torch', torch.__version__, '| transformers',
    transformers.__version__, '| datasets', datasets.__version__, '| cuda', torch.cuda.is_available())"

exec "$PYTHON" benchmarks/throughput.py --model convnextv2-tiny --device cuda --dtype bf16 --channels-last \
    --image-size 224 --batch-size "${BATCH:-128}" --steps "${STEPS:-30}" --warmup "${WARMUP:-10}" \
    --workers "${WORKERS:-8}" --work-dir "${HFGAL_THROUGHPUT_DIR:-/tmp/hfgal-throughput}" "$@"
