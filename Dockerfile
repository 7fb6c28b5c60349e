# syntax=docker/dockerfile:1
# article-classifier: Kafka consumer that classifies news articles.
#
#   docker build -t article-classifier .
#   docker run --rm -p 127.0.0.1:9108:9108 \
#       -e ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS=kafka:9092 article-classifier
#
# The image carries a small demo model trained at build time from the corpus that ships
# in the package (model/samples/demo.jsonl) so that it starts anywhere. Production mounts
# a real model artifact directory read-only over /opt/article-classifier/model
#   docker run -v /srv/models/2024-06:/opt/article-classifier/model:ro ...
# or points ARTICLE_CLASSIFIER_MODEL at another mounted directory.
# No research corpus is in the build context (see .dockerignore).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# 1. Dependencies only, from pyproject.toml: this layer is rebuilt only when they change.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt

# 2. The service itself (no dependency resolution: they are all installed above).
COPY service ./service
COPY model ./model
COPY schemas ./schemas
RUN pip install --no-deps . \
    && article-classifier --help > /dev/null

# 3. The default model: trained here on the packaged demo corpus, written read-only.
RUN article-classifier train --data model/samples/demo.jsonl \
        --out /opt/article-classifier/model --name demo \
    && chmod -R a+rX,go-w /opt/article-classifier

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="article-classifier" \
      org.opencontainers.image.description="Kafka microservice giving news articles a section and tags" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 classifier \
    && useradd --system --uid 10001 --gid classifier --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin classifier

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/article-classifier/model /opt/article-classifier/model

# ARTICLE_CLASSIFIER_MODEL feeds `--model` of serve and of the offline commands, e.g.
#   docker run --rm -i --entrypoint article-classifier IMAGE classify < articles.jsonl
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARTICLE_CLASSIFIER_MODEL=/opt/article-classifier/model \
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
