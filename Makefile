# The two commands a newcomer runs: `make demo` and `make test` (both set up .venv first).
PY := .venv/bin/python

.PHONY: setup demo test lint weights check bench clean ui ui-deps

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m pipeline.weights fetch
	$(PY) run_pipeline.py --text examples/script.txt --video examples/face.mp4 -o results/demo.mp4

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

weights: setup
	$(PY) -m pipeline.weights fetch

check: setup
	$(PY) run_pipeline.py --check

# The web UI (optional extra: gradio). The lock constrains it so that no pinned package moves.
ui-deps: setup
	python3 -m uv pip install --quiet --python $(PY) -r requirements-ui.txt --constraint requirements.lock

ui: ui-deps
	$(PY) -m pipeline.app

bench: setup
	$(PY) benchmarks/bench_pipeline.py

clean:
	rm -rf .venv results .pytest_cache
