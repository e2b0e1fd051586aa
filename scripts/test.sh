#!/usr/bin/env bash
# Set everything up and run the whole test suite (the real models are prepared once into data/test-models).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export LES_TEST_MODELS_DIR="${LES_TEST_MODELS_DIR:-$PWD/data/test-models}"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
# The slowest tests are listed at the end, to keep the whole run under 20 minutes.
exec .venv/bin/python -m pytest --durations=25 "$@"
