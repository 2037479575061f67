#!/usr/bin/env bash
# dlib's face-recognition ResNet three ways, in one run: candle-face (benches/dlib.rs), dlib
# itself (scripts/dlib_bench.py, dlib 20 from pip `dlib-bin`) and a plain-PyTorch port of the
# same network on candle-face's converted weights (scripts/bench_dlib_torch.py, which first
# checks its descriptors against dlib's). Ends with one JSON line of ratios, higher = candle-face
# faster:
#   vs-dlib:    dlib-resnet-infer-batch1 (dlib ms / ours), -batch32 (ours images/s / dlib's),
#               dlib-verify (dlib ms / ours: the whole verify of two LFW photos);
#   vs-pytorch: dlib-resnet-infer-batch1, -batch32 (against the faster of PyTorch's default
#               OpenMP wait policy and OMP_WAIT_POLICY=PASSIVE, as compare-pytorch.sh).
#
#   DLIB_PYTHON=/path/to/dlib-venv/bin/python TORCH_PYTHON=/path/to/torch-venv/bin/python \
#     scripts/compare-dlib.sh
#
# THREADS (default 2): candle-face (RAYON_NUM_THREADS) and PyTorch (torch.set_num_threads).
# dlib is single-threaded whatever THREADS says: dlib-bin has no BLAS and its CPU convolutions
# run on one core, so the vs-dlib ratios compare THREADS cores against one.
# Verify: candle-face detects with MTCNN, dlib's script with dlib's HOG detector; both then use
# dlib's 5-point shape predictor, dlib's 150×150 chip and the ResNet.
# ROUNDS=N (default 1) repeats the whole measurement N times, the three taking turns, prints each
# round's ratios on stderr and ends with the median of each ratio. RUNS scales the timed
# repetitions of every benchmark (default 1.0). DLIB_BENCH_BIN=path runs an already built
# benches/dlib binary instead of `cargo bench` (e.g. target/release/deps/dlib-HASH after
# `cargo build --release --bench dlib`; run it from the crate root). A Python that is missing or lacks its package is
# reported and skipped; whatever can be printed still is.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${CANDLE_FACE_SHARED:-../shared}
export CANDLE_FACE_SHARED=$SHARED
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
DLIB_PY=${DLIB_PYTHON:-python3}
TORCH_PY=${TORCH_PYTHON:-python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

HAVE_DLIB=1
if ! "$DLIB_PY" -c 'import dlib, numpy, PIL, safetensors' >/dev/null 2>&1; then
  HAVE_DLIB=0
  echo "dlib (with numpy, pillow, safetensors) is not importable with '$DLIB_PY': set DLIB_PYTHON" >&2
  echo "(pip install dlib-bin numpy pillow safetensors); no dlib figures, no vs-dlib ratios" >&2
elif [ ! -f "$SHARED/pretrained/dlib/dlib_face_recognition_resnet_model_v1.dat" ]; then
  HAVE_DLIB=0
  echo "$SHARED/pretrained/dlib/ has no dlib models (set CANDLE_FACE_SHARED): no dlib figures" >&2
fi
HAVE_TORCH=1
if ! "$TORCH_PY" -c 'import torch, numpy, safetensors' >/dev/null 2>&1; then
  HAVE_TORCH=0
  echo "torch (with numpy, safetensors) is not importable with '$TORCH_PY': set TORCH_PYTHON" >&2
  echo "(pip install torch numpy safetensors); no PyTorch figures, no vs-pytorch ratios" >&2
fi

for ((round = 1; round <= ROUNDS; round++)); do
  D="$OUT/round$round"
  mkdir -p "$D"
  : > "$D/candle.jsonl"; : > "$D/dlib.jsonl"; : > "$D/torch.jsonl"
  echo "== round $round/$ROUNDS: candle-face (RAYON_NUM_THREADS=$THREADS)" >&2
  if [ -n "${DLIB_BENCH_BIN:-}" ]; then
    RAYON_NUM_THREADS=$THREADS "$DLIB_BENCH_BIN" --bench | tee "$D/candle.jsonl"
  else
    RAYON_NUM_THREADS=$THREADS cargo bench --quiet --bench dlib | tee "$D/candle.jsonl"
  fi
  if [ $HAVE_DLIB = 1 ]; then
    echo "== round $round/$ROUNDS: dlib $("$DLIB_PY" -c 'import dlib; print(dlib.__version__)') (single-threaded)" >&2
    OMP_NUM_THREADS=1 "$DLIB_PY" scripts/dlib_bench.py | tee "$D/dlib.jsonl" || echo "dlib_bench.py failed" >&2
  fi
  if [ $HAVE_TORCH = 1 ]; then
    echo "== round $round/$ROUNDS: PyTorch, default OpenMP wait policy (threads $THREADS)" >&2
    env -u OMP_WAIT_POLICY "$TORCH_PY" scripts/bench_dlib_torch.py --threads "$THREADS" | tee -a "$D/torch.jsonl" \
      || echo "bench_dlib_torch.py failed (see above: a failed parity check exits 1)" >&2
    echo "== round $round/$ROUNDS: PyTorch, OMP_WAIT_POLICY=PASSIVE (threads $THREADS)" >&2
    OMP_WAIT_POLICY=PASSIVE "$TORCH_PY" scripts/bench_dlib_torch.py --threads "$THREADS" | tee -a "$D/torch.jsonl" \
      || echo "bench_dlib_torch.py failed" >&2
  fi
done
if [ $HAVE_DLIB = 0 ] && [ $HAVE_TORCH = 0 ]; then
  echo "neither dlib nor PyTorch available: candle-face's figures only, no ratios" >&2
  exit 0
fi

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(d, name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
def field(rows, bench, key, best=None):
    vals = [r[key] for r in rows if r.get("bench") == bench and r.get(key) is not None]
    if not vals:
        return None
    return best(vals) if best else vals[0]
def round_ratios(d):
    ours, dl, pt = load(d, "candle.jsonl"), load(d, "dlib.jsonl"), load(d, "torch.jsonl")
    o1 = field(ours, "dlib-resnet-infer", "batch1_latency_ms")
    o32 = field(ours, "dlib-resnet-infer", "batch32_images_per_s")
    ov = field(ours, "dlib-verify", "median_ms")
    r = {}
    def put(name, num, den):
        if num and den:
            r[name] = num / den
    put("vs-dlib/dlib-resnet-infer-batch1", field(dl, "dlib_net_b1", "batch1_latency_ms"), o1)
    put("vs-dlib/dlib-resnet-infer-batch32", o32, field(dl, "dlib_net_b32", "batch32_images_per_s"))
    put("vs-dlib/dlib-verify", field(dl, "dlib_verify", "median_ms"), ov)
    put("vs-pytorch/dlib-resnet-infer-batch1", field(pt, "dlib-resnet-infer", "batch1_latency_ms", min), o1)
    put("vs-pytorch/dlib-resnet-infer-batch32", o32, field(pt, "dlib-resnet-infer", "batch32_images_per_s", max))
    return r
per_round = [round_ratios(os.path.join(out, f"round{i}")) for i in range(1, rounds + 1)]
if rounds > 1:
    for i, r in enumerate(per_round, 1):
        print(f"round {i}: " + json.dumps({k: round(v, 3) for k, v in r.items()}), file=sys.stderr)
    print(f"median over {rounds} rounds:", file=sys.stderr)
keys = list(dict.fromkeys(k for r in per_round for k in r))
print(json.dumps({k: round(statistics.median(r[k] for r in per_round if k in r), 3) for k in keys}))
PY
