#!/usr/bin/env bash
# Set everything up and run the whole test suite (the real models are prepared once into data/test-models).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export LES_TEST_MODELS_DIR="${LES_TEST_MODELS_DIR:-$PWD/data/test-models}"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
# Two pytest processes, each taking whole test files (their module fixtures stay in one process): most of a test's
# time is waiting for real processes to start, stop or recover, so two in parallel on 2 cores finished in 16
# minutes where one took 23. The slowest tests are listed at the end, to keep the whole run under 20 minutes.
exec .venv/bin/python -m pytest -n "${TEST_PROCESSES:-2}" --dist loadfile --durations=25 "$@"
