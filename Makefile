# The two commands of the README's first screen: `make demo` and `make test`.
# Both work on a fresh machine: they create .venv and install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser demo generate test lint gpu-check clean

# The CPU torch wheel goes in first (it lies on disk here), so the range in pyproject.toml is
# already satisfied and pip never downloads a CUDA build. GPU users install their own torch.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP) browser

# The web gallery's browser test drives Debian's chromium (Playwright with the system executable: no
# browser download). Installed only when missing, and only as root (CI); elsewhere the test says it skipped.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "no /usr/bin/chromium: 'sudo apt-get install chromium' for the browser test"; \
		fi; \
	fi

# The main job on the embedded defaults: SQLite, in-process queue, tiny model.
demo: $(STAMP)
	$(BIN)/atelier demo

generate: $(STAMP)
	$(BIN)/atelier generate "a lighthouse at dusk" --seed 7 --count 4 --aspect 3:2 --out out

# lint-imports: the floors between packages (contracts in pyproject.toml [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# On the GPU the bot will use: dtypes, VAE tiling, a forced out-of-memory, batched vs solo, steps/s
# (tiny models, a few minutes). On CPU it runs what applies and lists what needs CUDA.
gpu-check: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) data out
