#!/usr/bin/env bash
# Sets up everything on a fresh Debian machine: system libraries, the .venv, the project and its extras.
# Idempotent and quick on a second run: pip keeps the llama-cpp-python wheel it built (~7 min) in its cache.
# Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
apt_packages=(libmagic1)
if [[ "${1:-}" == "--test" ]]; then
    extras="[test]"
    # ghostscript: the document tests make their second kind of PDF with it (fpdf2 makes the first).
    apt_packages+=(ghostscript util-linux)
fi

missing=()
for package in "${apt_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing system packages: ${missing[*]}"
    sudo_cmd=()
    [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "installing the project into .venv (llama-cpp-python builds from source the first time: ~7 minutes)"
.venv/bin/python -m pip install -q -e ".${extras}"
