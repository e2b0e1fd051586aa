#!/usr/bin/env bash
# Set everything up, prepare the default models, and run the service in the foreground (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python supervisor.py start --foreground "$@"
