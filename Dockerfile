# syntax=docker/dockerfile:1
#
# llm-proxy images (docs/deployment.md). BuildKit builds only the stages a target needs.
#
#   docker build -t llm-proxy .                          the proxy (the default: last stage)
#   docker build --target worker -t llm-proxy-worker .   the local transformers worker
#                                                        ([local] extra, CPU build of torch)
#   GPU worker: add --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#     PyTorch's CUDA wheels carry the CUDA runtime libraries themselves, so the slim Python
#     base serves GPUs too; the node supplies the driver (NVIDIA Container Toolkit, or the
#     GPU operator in Kubernetes). To build on a CUDA base image instead, pass one that has
#     Python 3.11 as `python` on PATH: --build-arg PYTHON_IMAGE=<nvidia/cuda-based image>
#     (the same base is used by every stage, because a venv links to its interpreter).
#
# Runtime contract: user 10001:10001, policy at /etc/llm-proxy/proxy.yaml (mount the
# DIRECTORY /etc/llm-proxy so live reload sees edits), writable cache and working directory
# /var/cache/llm-proxy (the only path written: keep it writable with --read-only), port 8080.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# ---- build: a compiler and the virtualenv with the proxy ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# build-essential only for dependencies without a wheel on this platform; this stage is
# discarded, so its packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
# Dependencies first, from pyproject's own list, so that a code change reuses this layer.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY README.md ./
COPY proxy/ ./proxy/
RUN pip install --no-deps .

# ---- worker-build: + torch (CPU build unless TORCH_INDEX_URL says otherwise) + transformers
FROM build AS worker-build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first from PyTorch's index; the [local] extra then keeps it (torch>=2.6).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['local']))" > /tmp/local.txt \
 && pip install -r /tmp/local.txt

# ---- runtime-base: no compiler, no apt, a numeric non-root user ---------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/var/cache/llm-proxy \
    HOME=/var/cache/llm-proxy
RUN groupadd --system --gid 10001 llm-proxy \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/cache/llm-proxy --shell /usr/sbin/nologin llm-proxy \
 && mkdir -p /etc/llm-proxy /var/cache/llm-proxy \
 && chown 10001:10001 /var/cache/llm-proxy

# ---- worker: `llm-proxy worker` on port 9000 ----------------------------------------------
FROM runtime-base AS worker
ENV HF_HOME=/var/cache/llm-proxy/huggingface
COPY --from=worker-build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/cache/llm-proxy
VOLUME ["/var/cache/llm-proxy"]
EXPOSE 9000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/health/liveness', timeout=2)"]
# Arguments after the image name go to `llm-proxy worker`, e.g. --model /models/my-model
ENTRYPOINT ["llm-proxy", "worker", "--host", "0.0.0.0", "--port", "9000"]
CMD ["--model", "/models/model"]

# ---- proxy (default target) ---------------------------------------------------------------
FROM runtime-base AS proxy
LABEL org.opencontainers.image.title="llm-proxy" \
      org.opencontainers.image.description="An OpenAI-compatible reverse proxy for LLMs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV LLM_PROXY_CONFIG=/etc/llm-proxy/proxy.yaml
COPY --from=build /opt/venv /opt/venv
COPY deploy/config/proxy.yaml /etc/llm-proxy/proxy.yaml
USER 10001:10001
# Relative paths in a policy (such as the cache's default `.cache/llm-proxy`) land in the
# writable cache volume.
WORKDIR /var/cache/llm-proxy
VOLUME ["/var/cache/llm-proxy"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/liveness', timeout=2)"]
CMD ["python", "-m", "proxy"]
