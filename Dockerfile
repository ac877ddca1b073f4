# landscape: API + web + job workers; a CUDA build of torch on Debian's Python image.
# Build: docker build -t landscape .   Run: see docker-compose.yml and docs/deploy.md.
#
# Why this base: torch.compile needs a C compiler at run time — Triton builds its CUDA
# launcher from C (gcc + Python.h), inductor's CPU path compiles C++ (g++). The
# pytorch/pytorch `-runtime` images have none, so compile failed there and the engine fell back
# to eager (bf16 0.239 vs 0.144 s/point compiled, ResNet-56 on an H200), and they pin an older
# torch than the tests run. `-devel` CUDA images have a compiler but add the whole CUDA
# toolkit (several GB) that nothing here uses: PyPI's Linux torch wheels already carry their CUDA
# runtime, cuDNN, NVRTC and Triton's ptxas as nvidia-* wheels, and the host only needs the
# NVIDIA driver + NVIDIA Container Toolkit. python:*-slim ships Python.h; Debian adds gcc/g++.
FROM python:3.11-slim-bookworm

# The torch the test suite runs (tests/test_deploy.py checks these against pyproject.toml's
# ranges and the installed torch); override with --build-arg for another release.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Where torch comes from, i.e. its CUDA build. PyPI's Linux wheel of 2.14 is built for CUDA
# 13.0 and needs an NVIDIA driver >= 580 on the host; for an older driver (>= 525.60.13) build
# with a CUDA 12 index that pytorch.org lists for the release, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# (docs/deploy.md, "The GPU driver").
ARG TORCH_INDEX_URL=https://pypi.org/simple

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LANDSCAPE_DATA_DIR=/data \
    LANDSCAPE_WEB_DIR=/app/web \
    LANDSCAPE_HOST=0.0.0.0 \
    LANDSCAPE_PORT=8000

# The C/C++ toolchain torch.compile calls at run time (Triton: gcc; inductor on CPU: g++).
# Not version-pinned: Debian bookworm's security updates replace these versions (libc6-dev
# follows the base image's libc6), so a pin would break the build at the next point release;
# the base image tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, in its own layer: gigabytes of CUDA libraries that change only with the pin,
# so editing the sources does not download them again. It satisfies pyproject's torch range;
# the project install below keeps it.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
    "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# The same install as `make` and the tests: the project's own pyproject.toml, nothing else,
# with the `onnx` extra so the service accepts `.onnx` uploads (onnx, onnx2torch, onnxruntime)
# and the `ray` extra for the compose file's optional Ray cluster.
COPY pyproject.toml README.md ./
COPY landscape ./landscape
COPY api ./api
RUN pip install --no-cache-dir "./[onnx,ray]"

# The build fails here, not the first job, unless torch is still the pinned CUDA build, Triton's
# toolchain is there (gcc, Python.h) and torch.compile really compiles (inductor's C++ path:
# no GPU at build time; scripts/gpu-check.py checks the Triton path on a GPU host).
RUN python -c "import os, shutil, sysconfig, torch; \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; \
assert torch.version.cuda, 'a CPU-only torch wheel'; \
assert shutil.which('gcc') and shutil.which('g++'), 'no C/C++ compiler'; \
assert os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')), 'no Python.h'; \
f = torch.compile(lambda x: x.sin() + 1, fullgraph=True); x = torch.ones(8); \
assert torch.allclose(f(x), x.sin() + 1)" \
    && rm -rf /tmp/torchinductor_root

# Architecture plugins (packages registering models under the `landscape.models` entry-point
# group, docs/models.md) go into a derived image; GET /api/models and the web form then list
# their models with their source:
#   FROM landscape
#   USER root
#   RUN pip install --no-cache-dir my-landscape-models==1.0
#   USER 1000:1000

COPY web ./web
COPY docs/metrics.md ./docs/metrics.md
# The GPU check of this very image (compiler, Triton, correctness, memory, speed; the GPU
# tests step skips: no tests/ here):
#   docker run --rm --gpus all --entrypoint python landscape \
#       scripts/gpu-check.py --device cuda --out /tmp/gpu-check
COPY scripts/gpu-check.py ./scripts/gpu-check.py
COPY scripts/gpu_check ./scripts/gpu_check

# torch.compile's caches on the data volume, not in the container's /tmp: a restarted or
# recreated container loads the kernels it compiled before instead of compiling cold
# (inductor's FX-graph and autograd caches, Triton's kernels, the driver's PTX JIT cache).
ENV TORCHINDUCTOR_CACHE_DIR=/data/compile-cache/inductor \
    TRITON_CACHE_DIR=/data/compile-cache/triton \
    CUDA_CACHE_PATH=/data/compile-cache/cuda

RUN useradd --create-home --uid 1000 landscape \
    && mkdir -p /data/compile-cache \
    && chown -R landscape:landscape /data
USER 1000:1000

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# SIGTERM (docker stop) stops running jobs at a chunk boundary and requeues them.
STOPSIGNAL SIGTERM
ENTRYPOINT ["landscape"]
CMD ["serve"]
