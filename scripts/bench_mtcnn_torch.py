"""facenet-pytorch's MTCNN detection time on CPU, for comparison with `cargo bench --bench detect`.

Usage: TORCH_PYTHON scripts/bench_mtcnn_torch.py IMAGE [--threads 2] [--iters 20]
Prints one JSON line like the Rust benchmark's. Needs torch, torchvision, pillow, numpy and
facenet-pytorch (pip install --no-deps facenet-pytorch).
"""
import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image
from facenet_pytorch import MTCNN

ap = argparse.ArgumentParser()
ap.add_argument("image")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=20)
a = ap.parse_args()
torch.set_num_threads(a.threads)
img = np.asarray(Image.open(a.image).convert("RGB"))
m = MTCNN(keep_all=True, device="cpu")
boxes, _ = m.detect(img)
faces = 0 if boxes is None else len(boxes)
ms = []
for _ in range(a.iters):
    t = time.perf_counter()
    m.detect(img)
    ms.append(1000 * (time.perf_counter() - t))
print(json.dumps({"bench": "mtcnn_detect", "impl": "facenet-pytorch", "threads": a.threads,
                  "iters": a.iters, "faces": faces, "ms_per_image_median": statistics.median(ms),
                  "ms_min": min(ms)}))
