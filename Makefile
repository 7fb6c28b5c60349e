# The commands people run. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint typecheck docs check schemas demo-model demo-model-de quality bench bench-service clean
.PHONY: chaos
CHAOS_S ?= 180

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e '.[dev,demo,bench]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its dev tools

demo: $(STAMP) ## run it end to end: embedded broker, demo model, service, sample articles
	$(BIN)/python -m devtools demo --model-dir artifacts/demo-model

demo-model: $(STAMP) ## train the demo model into artifacts/demo-model
	$(BIN)/article-classifier train --data model/samples/demo.jsonl --out artifacts/demo-model --name demo

demo-model-de: $(STAMP) ## train the German demo model into artifacts/demo-model-de (one model per language)
	$(BIN)/article-classifier train --data model/samples/demo-de.jsonl --out artifacts/demo-model-de --name demo-de

quality: $(STAMP) ## cross-validated quality on the research corpora (DATA=../shared/data)
	$(BIN)/python -m model.quality --data $(DATA)

# The benchmarks import devtools (the brokers), which is not installed: run them from the root.
BENCH := PYTHONPATH=. $(BIN)/python

bench: $(STAMP) ## in-process throughput and memory of the model (DATA=../shared/data)
	$(BENCH) benchmarks/bench_model.py --data $(DATA)

bench-language: $(STAMP) ## per-article cost of the language detector and routing (demo corpora)
	$(BENCH) benchmarks/bench_language.py

RESEARCH_MODEL := artifacts/research-model/model.json
bench-service: $(STAMP) $(RESEARCH_MODEL) ## service vs in-process and the I/O ceiling (BENCH_REPEAT=3, BROKER=apache-kafka)
	$(BENCH) benchmarks/bench_service.py --data $(DATA)/reuters21578/train.jsonl \
		--model artifacts/research-model --articles 30000 --service-args "$(SERVICE_ARGS)" \
		--repeat $(BENCH_REPEAT) --broker $(BROKER) $(foreach rate,$(RATES),--rate $(rate))

# The research model, trained again only when the model code or the install changes.
$(RESEARCH_MODEL): $(STAMP) $(wildcard model/*.py)
	$(BIN)/article-classifier train --data $(DATA)/bbc-news/train.jsonl \
		--data $(DATA)/reuters21578/train.jsonl --skip-invalid --out artifacts/research-model \
		--name research 2>/dev/null

.PHONY: bench-peers bench-scaleout bench-language
BENCH_REPEAT ?= 1
# bench-service: the broker, and the offered rates of its latency runs (none: no latency run).
BROKER ?= tansu
RATES ?=
bench-peers: $(STAMP) $(RESEARCH_MODEL) ## bench-service plus the peers (FastStream, aiokafka) and latency
	$(BENCH) benchmarks/bench_service.py --data $(DATA)/reuters21578/train.jsonl \
		--model artifacts/research-model --articles 20000 --service-args "$(SERVICE_ARGS)" \
		--repeat $(BENCH_REPEAT) --peers --max-seconds 8 --latency-seconds 5

bench-scaleout: $(STAMP) $(RESEARCH_MODEL) ## 1, 2 and 3 service instances in one group; rebalance pauses
	$(BENCH) benchmarks/bench_scaleout.py --data $(DATA)/reuters21578/train.jsonl \
		--model artifacts/research-model --repeat $(BENCH_REPEAT)

chaos: $(STAMP) ## soak: random kill -9, SIGTERM, partitions, joins while producing (CHAOS_S=180)
	$(BIN)/python -m chaos --duration-s $(CHAOS_S) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

kafka-jars: $(STAMP) ## fetch Apache Kafka's jars with Maven into ~/.cache/article-classifier
	$(BIN)/python -m devtools.kafka_jars

apicurio: $(STAMP) ## fetch Apicurio Registry (the registry tests) with Maven into ~/.cache/article-classifier
	$(BIN)/python -m devtools.apicurio --fetch-only

broker-kafka: $(STAMP) ## run Apache Kafka on 127.0.0.1:9092 (needs Java 17+ and Maven)
	$(BIN)/python -m devtools broker --engine apache-kafka --port 9092

.PHONY: kafka-jars broker-kafka apicurio

test: $(STAMP) ## run the whole test suite (starts the embedded broker itself)
	$(BIN)/pytest

test-fast: $(STAMP) ## unit tests only: no broker, no Docker, no research corpora
	$(BIN)/pytest -m "not kafka and not slow and not docker"

lint: $(STAMP) ## ruff lint and format check, and the package dependency contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy

docs: $(STAMP) ## build the documentation site into build/site (links and anchors checked)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

check: lint typecheck docs test ## everything CI runs

schemas: $(STAMP) ## regenerate the checked-in JSON Schema files from the pydantic models
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m service.http.openapi

.PHONY: lock compose-demo bench-artifact
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--annotation-style line --custom-compile-command 'make lock'

lock: $(STAMP) ## re-lock every dependency with hashes after editing pyproject.toml (uv)
	$(UV_COMPILE) pyproject.toml -o requirements/runtime.lock
	$(UV_COMPILE) pyproject.toml --extra dev --extra demo --extra bench -c requirements/runtime.lock \
		-o requirements/dev.lock
	$(UV_COMPILE) requirements/build.in -o requirements/build.lock

# `docker compose` (v2) where it is installed, else Debian's docker-compose (1.29).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
compose-demo: demo-model ## the compose stack (needs Docker) serving the demo model, chosen explicitly
	DOCKER_BUILDKIT=1 docker build -t article-classifier:local .
	MODEL_HOST_DIR=./artifacts/demo-model \
		$(COMPOSE) -p article-classifier up -d

bench-artifact: $(STAMP) ## size and load time of the demo and research model artifacts
	$(BIN)/article-classifier train --data model/samples/demo.jsonl --out artifacts/demo-model \
		--name demo > /dev/null
	$(BIN)/article-classifier train --data $(DATA)/bbc-news/train.jsonl \
		--data $(DATA)/reuters21578/train.jsonl --skip-invalid --out artifacts/research-model \
		--name research > /dev/null 2>&1
	$(BENCH) benchmarks/bench_artifact.py artifacts/demo-model artifacts/research-model

clean: ## remove the virtual environment and build leftovers
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache artifacts

.PHONY: ops-files
ops-files: $(STAMP) ## regenerate the generated ops files (Grafana dashboard and its ConfigMap, Kubernetes rules, AsyncAPI)
	$(BIN)/python -m ops.grafana.dashboard
	$(BIN)/python -m ops.kubernetes.rules
	$(BIN)/python -m ops.kubernetes.dashboard
	$(BIN)/python -m ops.asyncapi.generate
