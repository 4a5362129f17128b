#!/usr/bin/env bash
# Trellis Desktop for Linux/macOS. The first run installs into .venv here; later runs start at once.
#   ./run.sh [--cpu]                     start the app
#   ./run.sh [--cpu] test [pytest args]  run the tests (installs the test tools too)
#   --cpu                                ask for the CPU build of torch (not acted on yet)
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,5p' "$0" | cut -c3-; exit 0; fi

# --cpu: accepted but not acted on yet; pip takes torch==2.13.0 from the configured index (on CI,
# the local CPU wheel; on plain Linux PyPI, the CUDA 13 build). The installer issue will pick the
# CUDA wheel index when nvidia-smi shows a GPU, and the CPU index when --cpu is given or no GPU is seen.
if [[ ${1:-} == --cpu ]]; then shift; fi
mode="ui"
if [[ ${1:-} == test ]]; then mode="test"; shift; fi

# Keep the user's own Python setup (user site, PYTHONPATH, conda's PYTHONHOME) out of the app.
# The pip config is kept on purpose: it is how mirrors and CI's local torch wheel are found.
export PYTHONNOUSERSITE=1 PIP_USER=0 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH PYTHONHOME
py=.venv/bin/python

find_python() {
    local c
    for c in python3.12 python3.11 python3; do
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            echo "$c"; return 0
        fi
    done
    return 1
}

if ! "$py" -c '' >/dev/null 2>&1; then
    base_py=$(find_python) || {
        echo "Trellis Desktop needs Python 3.11 or 3.12. Install it, then run ./run.sh again:" >&2
        echo "  Debian/Ubuntu: sudo apt install python3.11 python3.11-venv" >&2
        echo "  Fedora: sudo dnf install python3.11    macOS: brew install python@3.11" >&2
        exit 1
    }
    echo "Creating .venv with $base_py ($("$base_py" -V 2>&1))"
    rm -rf .venv
    "$base_py" -m venv .venv || {
        rm -rf .venv
        echo "Could not create .venv. On Debian/Ubuntu: sudo apt install python3.11-venv (or python3-venv)" >&2
        exit 1
    }
fi

# Stamp name = hash of the requirements files (same as run.bat), so editing one triggers a re-install.
stamp() {
    "$py" -c 'import hashlib, pathlib, sys; print(hashlib.sha256(bytes().join(pathlib.Path(f).read_bytes() for f in sys.argv[1:])).hexdigest()[:16])' "$@"
}

# Wheels only: nothing may need a compiler. One retry covers a dropped download.
pip_install() {
    "$py" -m pip install --only-binary=:all: "$@" && return 0
    echo "pip failed; retrying once..." >&2
    "$py" -m pip install --only-binary=:all: "$@" && return 0
    echo "Install failed (see pip's message above). Check the network, then run ./run.sh again." >&2
    exit 1
}

app_stamp=.venv/.installed-$(stamp requirements_1.txt requirements_2.txt)
if [[ ! -e $app_stamp ]]; then
    rm -f .venv/.installed-*
    echo "Installing torch and the app's packages into .venv; the first run takes a few minutes..."
    pip_install -r requirements_1.txt
    pip_install -r requirements_2.txt
    touch "$app_stamp"
fi

if [[ $mode == test ]]; then
    test_stamp=.venv/.installed-$(stamp requirements_1.txt requirements_2.txt requirements_test.txt)
    if [[ ! -e $test_stamp ]]; then
        # The app's pins are constraints here: a test tool may not move them.
        pip_install -r requirements_test.txt -c requirements_1.txt -c requirements_2.txt
        touch "$test_stamp"
    fi
    # The Khronos glTF validator (npm, pinned by tests/js/package-lock.json) for tests/test_export.py.
    # Without npm the test says how to install it; a failed install leaves it to fail the same way.
    js_stamp=tests/js/node_modules/.installed-$(stamp tests/js/package-lock.json)
    if [[ ! -e $js_stamp ]] && command -v npm >/dev/null 2>&1; then
        if npm ci --prefix tests/js --no-audit --no-fund; then touch "$js_stamp"
        else echo "npm ci --prefix tests/js failed; the glTF validator test will fail" >&2; fi
    fi
    # System tools of the app's tests (Debian/Ubuntu package names): a headless chromium for the browser
    # test. Installed with apt-get when we are root (CI); otherwise the test that needs one says how.
    need=()
    command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
    if (( ${#need[@]} )) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing test tools with apt-get: ${need[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
            || echo "apt-get install ${need[*]} failed; the tests that need them will fail" >&2
    fi
    # pytest's exit status is ours. "No tests collected" is 5, so it fails CI like any other error.
    exec "$py" -m pytest "$@"
fi

exec "$py" -m desktop ui "$@"
