# Two commands a newcomer needs: `make run` and `make test`. Everything else is set up here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# What `make run` needs (the service, the embedded Redis and store, the web page's script), and on
# top of it what the tests and `make models` need (model-build and test tools, the Node test tools).
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
NODE_RUN_STAMP := node_modules/.installed-run
NODE_DEV_STAMP := node_modules/.installed-dev
WEB_BUNDLE := web/static/build/app.js
# The browser tests drive Debian's chromium through playwright (playwright's own browser download
# is not used).
CHROMIUM ?= /usr/bin/chromium

.PHONY: install run test bench models clean

install: $(DEV_STAMP) $(NODE_DEV_STAMP) $(WEB_BUNDLE) build/test-photos/.installed

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[local]'
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

# three.js and esbuild for the web page; with the dev dependencies, the Khronos glTF validator the
# tests run with node.
$(NODE_RUN_STAMP): package.json
	npm install --omit=dev --no-audit --no-fund --silent
	touch $@

$(NODE_DEV_STAMP): package.json
	npm install --no-audit --no-fund --silent
	touch $@ $(NODE_RUN_STAMP)

# The web page's script (web/src and three.js) and the API reference page's (Swagger UI), bundled.
$(WEB_BUNDLE): $(NODE_RUN_STAMP) $(wildcard web/src/*.js web/src/*.css)
	npm run --silent build:web

# A group photo for the tests and the benchmark, read from a pinned wheel (bench/photos.py).
build/test-photos/.installed: $(DEV_STAMP)
	$(PY) -c "from bench.photos import fetch_group_photo_wheel; fetch_group_photo_wheel()"
	touch build/test-photos/.installed

$(CHROMIUM):
	@{ [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium could not be installed (run 'apt-get install chromium' as root): the browser tests will fail." >&2

run: $(RUN_STAMP) $(WEB_BUNDLE)
	$(VENV)/bin/avatar up

test: install $(CHROMIUM)
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench

# Rebuild models/ from the registry packages (mediapipe wheel, npm face_mesh) and check them.
models: install
	$(PY) models/build.py

clean:
	rm -rf $(VENV) node_modules build var .pytest_cache web/static/build
