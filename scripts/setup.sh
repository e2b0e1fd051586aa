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
    # postgresql: the server binaries (initdb, pg_ctl) of the throw-away clusters the PostgreSQL tests start.
    apt_packages+=(ghostscript util-linux postgresql chromium)
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
# llama-cpp-python compiles llama.cpp for this CPU (-march=native), so a wheel built on one CPU may not run on another
# (an AVX-512/AMX build dies with SIGILL on an AVX2-only machine). pip's own wheel cache is keyed by the source only,
# so the wheel is built once per CPU model and flag set into a cache of ours, outside the checkout, and installed
# from there; a .venv built for another CPU is reinstalled.
llama_requirement=$(grep -o '"llama-cpp-python==[^"]*"' pyproject.toml | tr -d '"')
# On CPUs with AMX, -march=native compiles llama.cpp's AMX kernel in (even with -DGGML_AMX_INT8=OFF), and it
# segfaults on repacked quantized weights (upstream ggml-org/llama.cpp#20824): build without AMX instructions,
# so repacking runs the AVX-512 kernels instead. The cache key says which build it is.
build_variant=""
if grep -m1 '^flags' /proc/cpuinfo | grep -qw amx_tile; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='${no_amx}' -DCMAKE_CXX_FLAGS='${no_amx}'"
    build_variant="no-amx"
fi
cpu_key=$( (grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo; echo "$build_variant") | sha256sum | cut -c1-16)
wheel_dir="${LES_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-embeddings-service/wheels}/${llama_requirement}-cpu-${cpu_key}"
if ! compgen -G "$wheel_dir/llama_cpp_python-*.whl" >/dev/null; then
    echo "building ${llama_requirement} for this CPU (${cpu_key}; about 7 minutes on 2 cores, once per CPU)"
    rm -rf "$wheel_dir.partial"
    .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$wheel_dir.partial" "$llama_requirement"
    mv "$wheel_dir.partial" "$wheel_dir"
fi
if [[ "$(cat .venv/llama-cpp-cpu 2>/dev/null)" != "$cpu_key" ]]; then
    .venv/bin/python -m pip install -q --no-deps --force-reinstall "$wheel_dir"/llama_cpp_python-*.whl
    echo "$cpu_key" > .venv/llama-cpp-cpu
fi
echo "installing the project into .venv"
.venv/bin/python -m pip install -q -e ".${extras}"
