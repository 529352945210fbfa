# syntax=docker/dockerfile:1
# mcplane sidecar image: the MCP proxy sidecar (`mcplane-sidecar`). Build from the repository root:
#   docker build -f docker/sidecar.Dockerfile -t mcplane/sidecar:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: the project and its pinned dependencies, in a venv --------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/mcplane
COPY pyproject.toml constraints.txt README.md ./
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN /opt/mcplane/bin/pip install -c constraints.txt . \
 && find /opt/mcplane -name '__pycache__' -type d -prune -exec rm -rf {} +

# -- runtime: the venv only; no compilers, no pip cache, no sources; non-root -------------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/mcplane/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/mcplane /opt/mcplane
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["mcplane-sidecar"]
