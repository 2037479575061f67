"""Reference boxes and scores of dlib's HOG frontal face detector, for the parity check of
candle-face's port (`src/detect/hog_detector.rs`, `examples/hog_parity.rs`).

Needs: pip install dlib-bin numpy pillow (dlib 20.0.1). Runs
`dlib.get_frontal_face_detector().run(img, 1, 0)` (upsample once, threshold 0, as
face_recognition does) on every `--step`-th photo under `--images` (sorted paths, at most
`--count`) and writes one JSON line per photo:

  {"path": "<relative to --images>", "width": W, "height": H,
   "boxes": [[left, top, right, bottom], ...], "scores": [...], "weights": [...]}

in dlib's order (best score first). With `--time N` it also prints dlib's mean time per photo
for `det(img, 1)` over N repetitions of the first 20 photos (single-threaded: dlib's detector
does not use threads).

    python scripts/dlib_hog_ref.py --images ../shared/data/lfw/train --count 200 > hog_ref.jsonl
"""
import argparse, json, os, sys, time
import numpy as np
import dlib
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--images", required=True)
ap.add_argument("--count", type=int, default=200)
ap.add_argument("--step", type=int, default=20)
ap.add_argument("--time", type=int, default=0)
a = ap.parse_args()

paths = []
for root, _, files in os.walk(a.images):
    paths += [os.path.join(root, f) for f in files if f.lower().endswith((".jpg", ".jpeg", ".png"))]
paths = sorted(paths)[:: a.step][: a.count]

det = dlib.get_frontal_face_detector()
imgs = []
for p in paths:
    img = np.array(Image.open(p).convert("RGB"))
    imgs.append(img)
    rects, scores, weights = det.run(img, 1, 0)
    print(json.dumps({
        "path": os.path.relpath(p, a.images),
        "width": img.shape[1], "height": img.shape[0],
        "boxes": [[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
        "scores": list(scores), "weights": [int(w) for w in weights],
    }))

if a.time:
    sample = imgs[:20]
    t = time.perf_counter()
    for _ in range(a.time):
        for img in sample:
            det(img, 1)
    ms = (time.perf_counter() - t) / (a.time * len(sample)) * 1e3
    print(f"dlib det(img, 1): {ms:.1f} ms per photo ({sample[0].shape[1]}x{sample[0].shape[0]})",
          file=sys.stderr)
