#!/usr/bin/env bash
# bench/gpu_check.py on a CUDA machine whose Python has torch, transformers, peft and
# accelerate but nothing else of ours, and no package index to install from. The wheels
# it lacks travel in bench/wheels/ (git-ignored), fetched beforehand where pip works:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
#       --platform manylinux_2_17_x86_64 -d bench/wheels bitsandbytes==0.50.2 pydantic==2.14.4 \
#       pydantic-core==2.50.5 pydantic-settings==2.16.3 annotated-types typing-inspection \
#       typing-extensions python-dotenv
#   bash bench/gpu_check.sh --out bench/results        # any bench/gpu_check.py option
set -euo pipefail
cd "$(dirname "$0")/.."
site="${TMPDIR:-/tmp}/gpu-check-site"
if compgen -G "bench/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" bench/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
exec python3 bench/gpu_check.py "$@"
