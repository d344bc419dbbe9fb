# Two commands a newcomer needs: `make run` and `make test`. Everything else is set up here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# What `make run` needs (the service, the embedded Redis and store), and on top of it what the
# tests and `make models` need (model-build tools, test tools, the Node test tools).
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install run test bench models clean

install: $(DEV_STAMP) node_modules/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[local]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

# The Khronos glTF validator and three.js, run with node by the tests.
node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch node_modules/.installed

run: $(RUN_STAMP)
	$(VENV)/bin/avatar up

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

# Rebuild models/ from the registry packages (mediapipe wheel, npm face_mesh) and check them.
models: install
	$(PY) models/build.py

clean:
	rm -rf $(VENV) node_modules build var .pytest_cache
