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
# CTDNN_OFFLINE=1 (never download), CTDNN_VENV (virtual environment folder, default .venv).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${CTDNN_VENV:-.venv}"
# The networks are tiny: one thread per process avoids waiting on busy cores (measured by
# benchmarks/bench.py); set OMP_NUM_THREADS to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY="$VENV/bin/python"

setup() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    local want stamp="$VENV/.ctdnn-installed"
    want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$PY" -m pip install --quiet --upgrade pip
        # torch is pinned to the CPU build; other accelerators: install torch first.
        "$PY" -m pip install --quiet -e ".[book,test]"
        echo "$want" > "$stamp"
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
