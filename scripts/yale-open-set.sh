#!/usr/bin/env bash
# Open-set 1:N identification on Extended Yale B (`shared/data/yaleB`), as in issue #6:
#   - one person (UNKNOWN, default yaleB39) is left out of the gallery entirely;
#   - of every other person, the even-numbered images (in name order) are enrolled and the
#     odd-numbered ones are queries;
#   - the threshold is calibrated on pairs drawn from the *enrolled* images only (never the
#     queries, never the unknown person), with `candle-face calibrate --target TARGET`;
#   - every query and every image of the unknown person is identified at that threshold.
# Prints closed-set top-1, open-set identification rate (right person and within threshold),
# and the fraction of the unknown person's images answered "unknown", as one JSON line.
#
# Usage: scripts/yale-open-set.sh [MODEL] [TARGET]   (defaults: default, far=0.01)
# Env: CANDLE_FACE (binary; default target/release/candle-face), CANDLE_FACE_SHARED, UNKNOWN,
#      WORK (scratch folder; default a temporary one).
set -euo pipefail
MODEL=${1:-default}
TARGET=${2:-far=0.01}
BIN=${CANDLE_FACE:-target/release/candle-face}
SHARED=${CANDLE_FACE_SHARED:-../shared}
YALE="$SHARED/data/yaleB"
UNKNOWN=${UNKNOWN:-yaleB39}
[ -d "$YALE" ] || { echo "Yale B not found at $YALE (set CANDLE_FACE_SHARED)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 2; }
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK/gallery" "$WORK/queries"
YALE_ABS=$(cd "$YALE" && pwd)
for dir in "$YALE_ABS"/*/; do
  person=$(basename "$dir")
  [ "$person" = "$UNKNOWN" ] && continue
  mkdir -p "$WORK/gallery/$person" "$WORK/queries/$person"
  i=0
  while IFS= read -r f; do
    if (( i % 2 == 0 )); then ln -sf "$f" "$WORK/gallery/$person/"; else ln -sf "$f" "$WORK/queries/$person/"; fi
    i=$((i + 1))
  done < <(find "$dir" -maxdepth 1 -type f | sort)
done
# Pairs among the enrolled images only; calibrate a private copy of the model on them.
"$BIN" pairs --data "$WORK/gallery" --same 1500 --different 1500 --seed 7 --out "$WORK/cal_pairs.csv" >/dev/null
"$BIN" calibrate --model "$MODEL" --out "$WORK/model" --pairs "$WORK/cal_pairs.csv" --images "$WORK/gallery" --target "$TARGET" >&2
"$BIN" enroll --model "$WORK/model" --data "$WORK/gallery" --out "$WORK/gallery.safetensors" >&2
find "$WORK/queries" -type l | sort > "$WORK/known.txt"
find "$YALE_ABS/$UNKNOWN" -maxdepth 1 -type f | sort > "$WORK/unknown.txt"
xargs -d '\n' "$BIN" identify --model "$WORK/model" --gallery "$WORK/gallery.safetensors" --json < "$WORK/known.txt" > "$WORK/known.jsonl"
xargs -d '\n' "$BIN" identify --model "$WORK/model" --gallery "$WORK/gallery.safetensors" --json < "$WORK/unknown.txt" > "$WORK/unknown.jsonl"
python3 - "$WORK" "$TARGET" "$UNKNOWN" <<'PY'
import json, sys, os
work, target, unknown = sys.argv[1:]
def rows(name):
    return [json.loads(l) for l in open(os.path.join(work, name)) if l.strip()]
known, unk = rows("known.jsonl"), rows("unknown.jsonl")
def person(path):
    return os.path.basename(os.path.dirname(path))
top1 = sum(r["candidates"][0]["name"] == person(r["image"]) for r in known) / len(known)
open_set = sum(r["identity"] == person(r["image"]) for r in known) / len(known)
rejected = sum(not r["known"] for r in unk) / len(unk)
cfg = json.load(open(os.path.join(work, "model", "config.json")))
print(json.dumps({"target": target, "threshold": cfg["threshold"], "gallery_people": len({person(r["image"]) for r in known}),
  "queries": len(known), "top1": round(top1, 4), "open_set_identification": round(open_set, 4),
  "unknown_person": unknown, "unknown_images": len(unk), "unknown_rejected": round(rejected, 4)}))
PY
