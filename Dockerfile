# landscape: API + web + job workers on a CUDA-enabled PyTorch base.
# Build: docker build -t landscape .   Run: see docker-compose.yml and docs/deploy.md.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANDSCAPE_DATA_DIR=/data \
    LANDSCAPE_WEB_DIR=/app/web \
    LANDSCAPE_HOST=0.0.0.0 \
    LANDSCAPE_PORT=8000

WORKDIR /app

# The same install as `make` and the tests: the project's own pyproject.toml, nothing else,
# with the `onnx` extra so the service accepts `.onnx` uploads (onnx, onnx2torch, onnxruntime)
# and the `ray` extra for the compose file's optional Ray cluster.
# The base image's CUDA build of torch already satisfies the torch requirement and is kept.
COPY pyproject.toml README.md ./
COPY landscape ./landscape
COPY api ./api
RUN pip install --no-cache-dir "./[onnx,ray]"

# Architecture plugins (packages registering models under the `landscape.models` entry-point
# group, docs/models.md) go into a derived image; GET /api/models and the web form then list
# their models with their source:
#   FROM landscape
#   USER root
#   RUN pip install --no-cache-dir my-landscape-models==1.0
#   USER 1000:1000

COPY web ./web
COPY docs/metrics.md ./docs/metrics.md

RUN useradd --create-home --uid 1000 landscape \
    && mkdir -p /data \
    && chown landscape:landscape /data
USER 1000:1000

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# SIGTERM (docker stop) stops running jobs at a chunk boundary and requeues them.
STOPSIGNAL SIGTERM
ENTRYPOINT ["landscape"]
CMD ["serve"]
