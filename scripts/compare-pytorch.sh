#!/usr/bin/env bash
# Runs candle-face's benchmark suite (benches/suite.rs) and PyTorch's reference script
# (../shared/reference/bench_torch.py) on the same shapes in one run, PyTorch twice (default
# OpenMP wait policy and OMP_WAIT_POLICY=PASSIVE), and ends with one JSON line mapping each
# benchmark to the ratio candle-face / PyTorch in images per second (higher is better), against
# the faster of the two PyTorch runs.
#
#   TORCH_PYTHON=/path/to/venv/bin/python scripts/compare-pytorch.sh [BENCH...]
#
# BENCH: compact64-train compact64-infer irv1-infer irv1-train batch-all batch-hard loader mtcnn
# (default: all).
# Threads: both sides use THREADS (default 2). Without a Python that has torch the script says
# so and prints candle-face's figures only; without facenet_pytorch the InceptionResnetV1
# PyTorch benchmarks are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CANDLE_FACE_SHARED:-../shared}
PY=${TORCH_PYTHON:-python3}
THREADS=${THREADS:-2}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ $# -eq 0 ]; then
  set -- compact64-train compact64-infer irv1-infer irv1-train batch-all loader mtcnn
fi
SUITE=()
for b in "$@"; do [ "$b" = mtcnn ] || SUITE+=("$b"); done

echo "== candle-face (RAYON_NUM_THREADS=$THREADS)" >&2
: > "$OUT/candle.jsonl"
if [ ${#SUITE[@]} -gt 0 ]; then
  RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench suite -- "${SUITE[@]}" | tee "$OUT/candle.jsonl"
fi

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  echo "torch is not importable with '$PY': set TORCH_PYTHON to a Python with torch installed" >&2
  echo "(see $SHARED/reference/README.md); no ratios computed" >&2
  exit 0
fi
if [ ! -f "$SHARED/reference/bench_torch.py" ]; then
  echo "$SHARED/reference/bench_torch.py not found (set CANDLE_FACE_SHARED); no ratios computed" >&2
  exit 0
fi
TORCH_ARGS=()
for b in "$@"; do
  case "$b" in
    irv1-*)
      if "$PY" -c 'import facenet_pytorch' >/dev/null 2>&1; then TORCH_ARGS+=("$b");
      else echo "facenet_pytorch missing for '$PY': skipping PyTorch $b (pip install --no-deps facenet-pytorch)" >&2; fi ;;
    loader|mtcnn) ;;
    *) TORCH_ARGS+=("$b") ;;
  esac
done
if [ ${#TORCH_ARGS[@]} -gt 0 ]; then
  echo "== PyTorch, default OpenMP wait policy" >&2
  env -u OMP_WAIT_POLICY "$PY" "$SHARED/reference/bench_torch.py" --threads "$THREADS" "${TORCH_ARGS[@]}" | tee "$OUT/torch_default.jsonl"
  echo "== PyTorch, OMP_WAIT_POLICY=PASSIVE" >&2
  OMP_WAIT_POLICY=PASSIVE "$PY" "$SHARED/reference/bench_torch.py" --threads "$THREADS" "${TORCH_ARGS[@]}" | tee "$OUT/torch_passive.jsonl"
else
  : > "$OUT/torch_default.jsonl"; : > "$OUT/torch_passive.jsonl"
fi

# MTCNN detection on the 640×480 group photo (both sides), when asked for with `mtcnn`.
for b in "$@"; do
  if [ "$b" = mtcnn ]; then
    IMG="$SHARED/fixtures/images/group_640x480.png"
    RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench detect | tee -a "$OUT/candle.jsonl"
    if "$PY" -c 'import facenet_pytorch, torchvision' >/dev/null 2>&1; then
      env -u OMP_WAIT_POLICY "$PY" scripts/bench_mtcnn_torch.py "$IMG" --threads "$THREADS" | tee -a "$OUT/torch_default.jsonl"
      OMP_WAIT_POLICY=PASSIVE "$PY" scripts/bench_mtcnn_torch.py "$IMG" --threads "$THREADS" | tee -a "$OUT/torch_passive.jsonl"
    else
      echo "facenet_pytorch/torchvision missing for '$PY': no PyTorch MTCNN figure" >&2
    fi
  fi
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
ours = load("candle.jsonl")
torch = load("torch_default.jsonl") + load("torch_passive.jsonl")
def key(r):
    return (r["bench"], r.get("batch"))
def best_torch(bench, batch, field, higher):
    vals = [r[field] for r in torch if r["bench"] == bench and r.get("batch") == batch and field in r]
    if not vals:
        return None
    return max(vals) if higher else min(vals)
ratios = {}
train_ips = None
for r in ours:
    b = r["bench"]
    if b.endswith("-train"):
        t = best_torch(b, r["batch"], "images_per_s", True)
        if b == "compact64-train":
            train_ips = r["images_per_s"]
        if t: ratios[b] = round(r["images_per_s"] / t, 3)
    elif b.endswith("-infer"):
        t1 = best_torch(b, None, "batch1_latency_ms", False)
        t32 = best_torch(b, None, "batch32_images_per_s", True)
        if t1: ratios[b + "-batch1"] = round(t1 / r["batch1_latency_ms"], 3)
        if t32: ratios[b + "-batch32"] = round(r["batch32_images_per_s"] / t32, 3)
    elif b in ("batch-all", "batch-hard"):
        t = best_torch(b, r["batch"], "fwd_bwd_ms", False)
        if t: ratios[f"{b}-{r['batch']}"] = round(t / r["fwd_bwd_ms"], 3)
    elif b == "mtcnn_detect":
        t = best_torch(b, None, "ms_per_image_median", False)
        if t: ratios["mtcnn-detect"] = round(t / r["ms_per_image_median"], 3)
    elif b == "loader" and train_ips:
        ratios["loader-over-compact64-train"] = round(r["images_per_s"] / train_ips, 3)
print(json.dumps(ratios))
PY
