#!/usr/bin/env bash
# Trellis Desktop for Linux/macOS. The first run installs into .venv here; later runs start at once.
#   ./run.sh [--cpu] [app options]          start the app (opens the browser)
#   ./run.sh [--cpu] test [pytest args]     run the tests (installs the test tools too)
#   --cpu: the CPU build of PyTorch. --repair, --update, --wheelhouse DIR and the other launcher
#   options: ./run.sh --launcher-help. The logic is in installer/ (Python); this only finds Python.
set -uo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")" || exit 1

if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,6p' "$0" | cut -c3-; exit 0; fi

# Keep the user's own Python setup (user site, PYTHONPATH, conda's PYTHONHOME) out of the app.
# The pip config is kept on purpose: it is how mirrors and CI's local torch wheel are found.
export PYTHONNOUSERSITE=1 PIP_USER=0 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH PYTHONHOME

ok_python() { "$1" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 14))' >/dev/null 2>&1; }

# The app's own Python (.python/, made by installer/get_python.sh) first, then the system's.
candidates=($(ls -d .python/cpython-3.11.*/bin/python3.11 2>/dev/null | sort -V | tail -1) python3.11 python3.12 python3)
if [[ -n ${TRELLIS_PYTHON:-} ]]; then candidates=("$TRELLIS_PYTHON"); fi
py=""
for c in "${candidates[@]}"; do
    if ok_python "$c"; then py=$c; break; fi
done
# None: offer to download a private one (asks in a terminal; TRELLIS_FETCH_PYTHON=1 / 0: yes / no without asking).
if [[ -z $py && -z ${TRELLIS_PYTHON:-} ]]; then
    fetched=$(bash installer/get_python.sh "$PWD" | tail -1)
    if [[ -n $fetched ]] && ok_python "$fetched"; then py=$fetched; fi
fi
if [[ -z $py ]]; then
    echo "Trellis Desktop needs Python 3.11 or 3.12 (with its venv module). Install it, then run ./run.sh again:" >&2
    echo "  Debian/Ubuntu: sudo apt install python3.11 python3.11-venv" >&2
    echo "  Fedora: sudo dnf install python3.11    macOS: brew install python@3.11" >&2
    echo "  (or point TRELLIS_PYTHON at a python3.11 executable, or let ./run.sh download a private one into" >&2
    echo "  .python/: run it in a terminal and answer y, or set TRELLIS_FETCH_PYTHON=1)" >&2
    exit 1
fi
if [[ ${1:-} == --launcher-help ]]; then exec "$py" -m installer launch --help; fi

# 0: installed and up to date; 10: install (or update) first; anything else: an error, already explained.
"$py" -m installer check "$@"
rc=$?
if (( rc == 10 )); then
    "$py" -m installer install "$@" || exit $?
elif (( rc != 0 )); then
    exit $rc
fi
exec "$py" -m installer launch "$@"
