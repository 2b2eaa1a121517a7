# The interface people and CI use. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RASA_TELEMETRY_ENABLED := false
export TOKENIZERS_PARALLELISM := false
DEV_SET ?= ../shared/eval/faq_dev.jsonl

.DEFAULT_GOAL := help
.PHONY: help setup run run-scaled test test-py test-rasa eval bench fuzz soak lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## create what is missing (venvs, e5 model, index, Rasa model), reusing the cache
	@python3 tools/setup.py

run: setup  ## set up, then run the whole stack in the foreground (Ctrl-C stops it)
	@$(PY) -m tools.run_stack

test: setup  ## set up, then run pytest and the Rasa checks
	@$(MAKE) --no-print-directory test-rasa test-py

test-py:
	$(PY) -m pytest -q

test-rasa:
	@cd bot && PYTHONPATH=$(CURDIR)/bot ../.venv-rasa/bin/rasa data validate --quiet
	@cd bot && PYTHONPATH=$(CURDIR)/bot ../.venv-rasa/bin/rasa test core --e2e --stories tests/ \
		--model $$(python3 -c 'import json;print(json.load(open("../var/artifacts.json"))["rasa_model"])') \
		--fail-on-prediction-errors --out ../var/rasa-results --no-plot

eval: setup  ## FAQ accuracy on the dev set, per language; charts in reports/eval.html
	$(PY) -m retrieval eval --dev $(DEV_SET) --report reports

bench: setup  ## latency of search and chat at 1 and 16 clients, full vs BM25-only
	$(PY) -m tools.bench

run-scaled: setup  ## two app instances and two Rasa servers on PostgreSQL + Redis behind nginx
	@$(PY) -m tools.run_scaled

fuzz: setup  ## schemathesis against a running stack (all checks, stateful, fixed seed); pii_scan after
	$(PY) -m tools.fuzz

soak: setup  ## 200 concurrent conversations for 5 minutes on the scaled stack; figures into reports/
	$(PY) -m tools.soak

clean:  ## remove this clone's links and run state (the shared cache stays)
	rm -rf .venv .venv-rasa var
