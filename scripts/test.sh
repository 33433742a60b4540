#!/usr/bin/env bash
# Install everything the tests need into .venv, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[model,postgres,dev]'
.venv/bin/ruff check neuroq tests bench examples
.venv/bin/ruff format --check neuroq tests bench examples
.venv/bin/mypy neuroq bench
.venv/bin/pytest -q -p no:cacheprovider "$@"
