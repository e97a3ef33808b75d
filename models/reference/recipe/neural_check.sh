#!/usr/bin/env bash
# Streaming evaluation of the shipped command head on speech that no training step has heard
# (the recorded Italian and Russian prompts excepted: they are training negatives, item 23).
# Run as neural_check.sh: natural voices (the two held-out Kokoro-82M voice styles, SVOX Pico's
# en-GB voice and RHVoice's US English bdl and clb; see neural_check.py). Run as recorded_check.sh
# (a symlink to this file): false accepts on recorded human speech (recorded_check.py). Needs the
# recipe venv (train.sh or scripts/setup), sox, dpkg-deb and libsonic0; installs requirements-neural.txt into
# it; pico_tts.py, rhvoice_tts.py and recorded_speech.py fetch their pinned .debs into the cache.
#   models/reference/recipe/neural_check.sh [HEAD.onnx [T K R V H]] [--gain DB]   # no arguments: writes neural_voice_check.md
#   models/reference/recipe/recorded_check.sh [HEAD.onnx [T K R V H]]             # no arguments: writes recorded_speech_check.md
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../../.." && pwd)"
# HEAD.onnx is given relative to the caller's directory; the script runs in the recipe's
if [ $# -ge 1 ] && [ "${1#--}" = "$1" ]; then
  [ -f "$1" ] || { echo "$(basename "$0"): no head model at $1 (expected HEAD.onnx [T K R V H])" >&2; exit 1; }
  set -- "$(realpath "$1")" "${@:2}"
fi
cd "$REPO"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OUTPOST_ORT_THREADS="${OUTPOST_ORT_THREADS:-1}"
command -v sox >/dev/null || { echo "missing sox: apt-get install -y sox" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "missing dpkg-deb: apt-get install -y dpkg" >&2; exit 1; }
# RHVoice's library (rhvoice_tts.py) links libsonic; espeak-ng brings it; checked before any synthesis
if [ "$(basename "$0")" = neural_check.sh ] && ! ldconfig -p | grep 'libsonic\.so\.0' >/dev/null; then
  echo "missing libsonic0 (RHVoice): apt-get install -y libsonic0" >&2; exit 1
fi
[ -x .venv/bin/python ] || { echo "no recipe venv: run scripts/setup or models/reference/recipe/train.sh first" >&2; exit 1; }
.venv/bin/pip install -q -r models/reference/recipe/requirements-neural.txt
scripts/fetch-models
cd models/reference/recipe
exec "$REPO/.venv/bin/python" "$(basename "$0" .sh).py" "$@"
