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
# ROUNDS=N (default 1) repeats the whole measurement N times, candle-face and PyTorch taking
# turns, prints each round's ratios on stderr and ends with the median ratio of each benchmark
# (on a shared or virtualised machine a single round can be off by 30% either way).
# Threads: both sides use THREADS (default 2). Without a Python that has torch the script says
# so and prints candle-face's figures only; without facenet_pytorch the InceptionResnetV1
# PyTorch benchmarks are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CANDLE_FACE_SHARED:-../shared}
PY=${TORCH_PYTHON:-python3}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ $# -eq 0 ]; then
  set -- compact64-train compact64-infer irv1-infer irv1-train batch-all loader mtcnn
fi
SUITE=()
for b in "$@"; do [ "$b" = mtcnn ] || SUITE+=("$b"); done

HAVE_TORCH=1
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  HAVE_TORCH=0
  echo "torch is not importable with '$PY': set TORCH_PYTHON to a Python with torch installed" >&2
  echo "(see $SHARED/reference/README.md); candle-face's figures only, no ratios computed" >&2
elif [ ! -f "$SHARED/reference/bench_torch.py" ]; then
  HAVE_TORCH=0
  echo "$SHARED/reference/bench_torch.py not found (set CANDLE_FACE_SHARED); no ratios computed" >&2
fi
TORCH_ARGS=()
if [ $HAVE_TORCH = 1 ]; then
  for b in "$@"; do
    case "$b" in
      irv1-*)
        if "$PY" -c 'import facenet_pytorch' >/dev/null 2>&1; then TORCH_ARGS+=("$b");
        else echo "facenet_pytorch missing for '$PY': skipping PyTorch $b (pip install --no-deps facenet-pytorch)" >&2; fi ;;
      loader|mtcnn) ;;
      *) TORCH_ARGS+=("$b") ;;
    esac
  done
else
  ROUNDS=1
fi

for ((round = 1; round <= ROUNDS; round++)); do
  D="$OUT/round$round"
  mkdir -p "$D"
  : > "$D/candle.jsonl"; : > "$D/torch_default.jsonl"; : > "$D/torch_passive.jsonl"
  echo "== round $round/$ROUNDS: candle-face (RAYON_NUM_THREADS=$THREADS)" >&2
  if [ ${#SUITE[@]} -gt 0 ]; then
    RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench suite -- "${SUITE[@]}" | tee "$D/candle.jsonl"
  fi
  if [ ${#TORCH_ARGS[@]} -gt 0 ]; then
    echo "== round $round/$ROUNDS: PyTorch, default OpenMP wait policy" >&2
    env -u OMP_WAIT_POLICY "$PY" "$SHARED/reference/bench_torch.py" --threads "$THREADS" "${TORCH_ARGS[@]}" | tee "$D/torch_default.jsonl"
    echo "== round $round/$ROUNDS: PyTorch, OMP_WAIT_POLICY=PASSIVE" >&2
    OMP_WAIT_POLICY=PASSIVE "$PY" "$SHARED/reference/bench_torch.py" --threads "$THREADS" "${TORCH_ARGS[@]}" | tee "$D/torch_passive.jsonl"
  fi
  # MTCNN detection on the 640×480 group photo (both sides), when asked for with `mtcnn`.
  for b in "$@"; do
    if [ "$b" = mtcnn ]; then
      IMG="$SHARED/fixtures/images/group_640x480.png"
      RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench detect | tee -a "$D/candle.jsonl"
      if [ $HAVE_TORCH = 0 ]; then
        :
      elif "$PY" -c 'import facenet_pytorch, torchvision' >/dev/null 2>&1; then
        env -u OMP_WAIT_POLICY "$PY" scripts/bench_mtcnn_torch.py "$IMG" --threads "$THREADS" | tee -a "$D/torch_default.jsonl"
        OMP_WAIT_POLICY=PASSIVE "$PY" scripts/bench_mtcnn_torch.py "$IMG" --threads "$THREADS" | tee -a "$D/torch_passive.jsonl"
      else
        echo "facenet_pytorch/torchvision missing for '$PY': no PyTorch MTCNN figure" >&2
      fi
    fi
  done
done
[ $HAVE_TORCH = 1 ] || exit 0

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(d, name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
def round_ratios(d):
    ours = load(d, "candle.jsonl")
    torch = load(d, "torch_default.jsonl") + load(d, "torch_passive.jsonl")
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
            if t: ratios[b] = r["images_per_s"] / t
        elif b.endswith("-infer"):
            t1 = best_torch(b, None, "batch1_latency_ms", False)
            t32 = best_torch(b, None, "batch32_images_per_s", True)
            if t1: ratios[b + "-batch1"] = t1 / r["batch1_latency_ms"]
            if t32: ratios[b + "-batch32"] = r["batch32_images_per_s"] / t32
        elif b in ("batch-all", "batch-hard"):
            t = best_torch(b, r["batch"], "fwd_bwd_ms", False)
            if t: ratios[f"{b}-{r['batch']}"] = t / r["fwd_bwd_ms"]
        elif b == "mtcnn_detect":
            t = best_torch(b, None, "ms_per_image_median", False)
            if t: ratios["mtcnn-detect"] = t / r["ms_per_image_median"]
        elif b == "loader" and train_ips:
            ratios["loader-over-compact64-train"] = r["images_per_s"] / train_ips
    return ratios
per_round = [round_ratios(os.path.join(out, f"round{i}")) for i in range(1, rounds + 1)]
if rounds > 1:
    for i, r in enumerate(per_round, 1):
        print(f"round {i}: " + json.dumps({k: round(v, 3) for k, v in r.items()}), file=sys.stderr)
    print(f"median over {rounds} rounds:", file=sys.stderr)
keys = list(dict.fromkeys(k for r in per_round for k in r))
print(json.dumps({k: round(statistics.median(r[k] for r in per_round if k in r), 3) for k in keys}))
PY
