#!/usr/bin/env bash
# The two entry points of ctdnn; both set everything up on a fresh machine.
#
#   ./run.sh book [--preset quick|smoke|paper] [runner options]
#       create .venv, install the pinned environment, execute every experiment notebook with
#       the preset (default: quick) and build the book into _build/html.
#   ./run.sh test [pytest options]
#       create .venv, install the pinned environment (and Debian's chromium when run as root),
#       build the smoke-preset book in .smoke-book/, then run the unit tests, nbval on the
#       notebooks and the headless-browser check of the built book.
#
# Environment: CTDNN_DATA_DIR (folder with the paper's .mat files), CTDNN_CACHE_DIR,
# CTDNN_OFFLINE=1 (never download), CTDNN_VENV (virtual environment folder, default .venv),
# CTDNN_TORCH_INDEX (package index for torch: unset = pip's default index, which serves the
# CUDA build on Linux; https://download.pytorch.org/whl/cpu = the CPU-only build).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${CTDNN_VENV:-.venv}"
# The networks are tiny: one thread per process avoids waiting on busy cores (measured by
# benchmarks/bench.py); set OMP_NUM_THREADS to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY="$VENV/bin/python"

# The environment is requirements/lock.txt (every package but torch, with hashes), then torch
# at the pin of pyproject.toml from the index CTDNN_TORCH_INDEX selects, then ctdnn itself
# (editable, no dependency resolution). pip's own output goes to a log that is shown only
# when a step fails: it is noisy on machines whose pip configuration names extra indexes.
setup() {
    local stamp="$VENV/.ctdnn-installed" log="$VENV/setup.log" want start torch
    want="$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -d' ' -f1) ${CTDNN_TORCH_INDEX:-}"
    if [ -x "$PY" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    start=$SECONDS
    if [ ! -x "$PY" ]; then
        echo "ctdnn: creating the virtual environment $VENV (Python 3.11)"
        python3 -m venv "$VENV"
    fi
    torch="$(sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)"
    : > "$log"
    echo "ctdnn: installing the locked environment (requirements/lock.txt, $(grep -c '^[A-Za-z]' requirements/lock.txt) packages); log: $log"
    step "$log" -m pip install --require-hashes --no-deps -r requirements/lock.txt
    if [ -n "${CTDNN_TORCH_INDEX:-}" ]; then
        echo "ctdnn: installing $torch from $CTDNN_TORCH_INDEX"
        step "$log" -m pip install --index-url "$CTDNN_TORCH_INDEX" "$torch"
    else
        echo "ctdnn: installing $torch from the default index (CTDNN_TORCH_INDEX selects another)"
        step "$log" -m pip install "$torch"
    fi
    step "$log" -m pip install --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
    echo "ctdnn: environment ready ($("$PY" -c 'import torch; print("torch", torch.__version__)')) in $((SECONDS - start)) s"
}

# One pip step of setup(): output to the log; on failure, its tail and the exit status.
step() {
    local log="$1"
    shift
    echo "+ $PY $*" >> "$log"
    if ! "$PY" "$@" >> "$log" 2>&1; then
        echo "ctdnn: set-up failed: $PY $*" >&2
        tail -n 30 "$log" >&2
        echo "ctdnn: the full log is $log" >&2
        exit 1
    fi
}

browser() {
    if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing Debian's chromium for the browser test"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    book)
        setup
        exec "$PY" -m ctdnn run "$@"
        ;;
    test)
        setup
        browser
        "$PY" -m ctdnn run --preset smoke --workdir .smoke-book --force
        CTDNN_BOOK_DIR="$PWD/.smoke-book/_build/html" exec "$PY" -m pytest \
            --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks "$@"
        ;;
    *)
        echo "usage: ./run.sh book [--preset quick|smoke|paper] | ./run.sh test [pytest options]" >&2
        exit 2
        ;;
esac
