# Two commands a newcomer needs: `make run` and `make test`. Everything else is set up here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The browser tests drive Debian's chromium through playwright (playwright's own browser download
# is not used).
CHROMIUM ?= /usr/bin/chromium
WEB_BUNDLE := web/static/build/app.js

.PHONY: install run test bench models clean

install: $(STAMP) node_modules/.installed $(WEB_BUNDLE)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# three.js and esbuild for the web page; the Khronos glTF validator, run with node by the tests.
node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch node_modules/.installed

# The web page's script: web/src and three.js bundled into one file the API serves.
$(WEB_BUNDLE): node_modules/.installed $(wildcard web/src/*.js)
	npm run --silent build:web

$(CHROMIUM):
	@{ [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium could not be installed (run 'apt-get install chromium' as root): the browser tests will fail." >&2

run: install
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
