#!/usr/bin/env bash
# `emotion bench` on a lent GPU machine with no package index: docs/gpu.md and docs/bench-gpu-h200/ came from
#   bash scripts/device_bench.sh OUT_DIR
# run in the repository root on a machine whose python3 already has jax (CUDA), torch (CUDA), numpy, pillow,
# matplotlib, pyyaml and opencv, with keras==3.15.1, namex, optree and tensorboardX as wheels in .whl/
# (`pip download --no-deps --python-version 3.12 ... -d .whl`). TensorFlow is not installed there (its CUDA
# wheel is far larger than what can be carried), so the TensorFlow and seed-reference rows are absent.
set -uo pipefail
out=${1:?usage: device_bench.sh OUT_DIR}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
lscpu | grep -E '^Model name|^CPU\(s\)'
KERAS_BACKEND=jax python3 -c "import jax, torch, keras; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.get_device_name(0)); print('keras', keras.__version__)"
ls data/happy >/dev/null 2>&1 || python3 -m emotion synth data
# a smoke run first; if the tuned kernels break on this machine, fall back to stock Keras and say so
if ! python3 -m emotion bench --quick --backends jax,torch --data data --device gpu --out /tmp/quick; then
    echo "quick run failed: retrying as shipped (EMOTION_FAST_KERNELS=0)"; export EMOTION_FAST_KERNELS=0
    python3 -m emotion bench --quick --backends jax,torch --data data --device gpu --out /tmp/quick || exit 1
fi
# the seed's network at 256 px (the CPU table's setting), then the shipped face model's network (vgg-bn, 48 px)
python3 -m emotion bench --backends jax,torch --data data --device gpu --steps 20 --timeout 300 --out "$out/seed"
python3 -m emotion bench --backends jax,torch --data data --device gpu --steps 20 --timeout 300 \
    --preset vgg-bn --image-size 48 --batch-size 64 --out "$out/vgg-bn"
# mixed precision, and the same network as shipped by Keras and the frameworks (--stock rows)
python3 -m emotion bench --backends jax,torch --data data --device gpu --steps 20 --timeout 300 \
    --preset vgg-bn --image-size 48 --batch-size 64 --precision mixed_bfloat16 --out "$out/vgg-bn-bf16"
python3 -m emotion bench --backends jax,torch --data data --device gpu --steps 20 --timeout 300 \
    --preset vgg-bn --image-size 48 --batch-size 64 --stock --out "$out/vgg-bn-stock"
# data parallel over every GPU JAX sees (says so where there is one)
python3 -m emotion bench --backends jax --data data --device gpu --devices all --no-reference --repeats 3 \
    --steps 20 --preset vgg-bn --image-size 48 --batch-size 64 --out "$out/devices-all"
