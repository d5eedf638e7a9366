# syntax=docker/dockerfile:1
#
# AI Director service image: the FastAPI app plus a CUDA build of torch.
#
#   docker build -t ai-director .
#   docker run --gpus all -p 8000:8000 -v hf-cache:/models/hf ai-director
#
# (docker/compose.yaml wires up the brands, HF cache and adapter mounts.)

# ---------------------------------------------------------------------------
# python: the CUDA base plus Python 3.11, shared by the build and run stages.
#
# Why this base: the torch 2.13.0 wheels on PyPI are CUDA 13.0 builds that carry
# their own CUDA runtime, cuBLAS and cuDNN as pip packages. So the image needs no
# CUDA libraries of its own (a cudnn-runtime base would only add ~3 GB of
# duplicates); what the nvidia/cuda "base" flavour does give is the container
# toolkit wiring (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES) and
# NVIDIA_REQUIRE_CUDA=cuda>=13.0, which makes a host whose driver is too old for
# the wheel (< 580) fail at `docker run` with a clear message instead of torch
# quietly falling back to the CPU. Keep the CUDA major in step with the torch wheel.
# Ubuntu 22.04 ships Python 3.10, so 3.11 comes from the deadsnakes PPA.
# ---------------------------------------------------------------------------
FROM nvidia/cuda:13.0.1-base-ubuntu22.04 AS python

# Build-time only (ARG, not ENV): apt must not prompt, but the running image keeps the default.
ARG DEBIAN_FRONTEND=noninteractive

# Versions are not pinned: the PPA keeps only its newest build, so a pin would break
# the build at the next Python patch release. software-properties-common is only
# needed for add-apt-repository and is purged in the same layer.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && apt-get purge -y --auto-remove software-properties-common \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------
# builder: a virtualenv at /opt/venv holding torch and the ai-director package.
# Built from a scratch copy of the sources in /src so the run stage gets only the
# installed package (no source tree in the working directory to shadow it).
# ---------------------------------------------------------------------------
FROM python AS builder

# The torch pin the tests and CI use; override with --build-arg only together with them.
ARG TORCH_VERSION=2.13.0

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, in its own layer: it is ~5 GB with its CUDA libraries and changes far
# less often than the code, so code edits reuse this cached layer.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}"

# The same distribution the tests install: `pip install .` of this pyproject.toml.
# torch is named again so the resolver keeps the pinned build instead of replacing it.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ app/
COPY training/ training/
RUN pip install --no-cache-dir . "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------------------
# runtime: the venv, the default brands file and an unprivileged user.
# ---------------------------------------------------------------------------
FROM python AS runtime

# A fixed uid so host-side volume permissions can be set to match (chown 10001).
# The home folder is for the caches libraries keep there (triton kernels, pythainlp data).
RUN groupadd --gid 10001 director \
    && useradd --uid 10001 --gid director --create-home --shell /usr/sbin/nologin director \
    && mkdir -p /models/hf \
    && chown director:director /models/hf

COPY --from=builder /opt/venv /opt/venv

# HF_HOME: the mount point of the Hugging Face cache volume, so the 7B weights are
# downloaded once and survive container restarts. /models/hf is owned by director
# above, so a fresh named volume mounted there inherits a writable owner.
# AI_DIRECTOR_HOST: the service binds 127.0.0.1 by default, unreachable from outside
# a container. AI_DIRECTOR_BRANDS_PATH: absolute, so it does not depend on WORKDIR.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/hf \
    AI_DIRECTOR_HOST=0.0.0.0 \
    AI_DIRECTOR_PORT=8000 \
    AI_DIRECTOR_BRANDS_PATH=/app/brands/brands.json

WORKDIR /app
# The built-in brands file; mount a folder over /app/brands to edit it live (the
# store watches the folder, so replacing brands.json reloads it without a restart).
COPY brands/ brands/

# Numeric, so Kubernetes' runAsNonRoot (and any host) can verify it is not root
# without reading /etc/passwd; 10001 is the director user created above.
USER 10001:10001

EXPOSE 8000

# /health is the liveness probe: it answers 200 while the model is still loading
# (readiness is /ready), so it is the right thing for Docker's restart logic to watch.
# The start period covers a first run that downloads and loads a 7B model.
# Python's urllib, because the image has no curl; a non-2xx answer or no answer raises.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AI_DIRECTOR_PORT', '8000'), timeout=5)"]

CMD ["python", "-m", "app"]
