#!/usr/bin/env python3
"""dlib's HOG boxes, 5-point landmarks and face-chip geometry on LFW, for fitting our detector onto dlib's.

What it does
  For the first 1500 people in sorted order of shared/data/lfw/train, takes each person's first
  image (sorted by name), decodes it with PIL (RGB), runs dlib.get_frontal_face_detector() with
  upsample 1 and keeps the largest detection, runs shape_predictor_5_face_landmarks on it, and
  dlib.get_face_chip_details(shape, 150, 0.25). Images with no detection are listed under
  "no_face" (not in "faces").

Run
  python scripts/dlib_lfw_landmarks.py [--lfw DIR] [--people 1500]
      [--out dlib_lfw_landmarks.json]

Writes JSON: {"dlib": version, "people": N, "params": {...}, "no_face": [paths],
  "faces": [{"path": "Person/Person_0001.jpg" (relative to lfw/train), "width", "height",
             "n_detections", "box": [left, top, right, bottom] (dlib rectangle, inclusive ints),
             "landmarks5": [[x, y] x 5] (dlib's order of the 5-point model),
             "chip_rect": [l, t, r, b] (floats), "chip_angle": radians}]}
Prints the number of faces and misses.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import dlib
from PIL import Image

SHARED = os.environ.get("CANDLE_FACE_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
MODELS = os.path.join(SHARED, "pretrained", "dlib")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", default=os.path.join(SHARED, "data", "lfw", "train"))
    ap.add_argument("--people", type=int, default=1500)
    ap.add_argument("--out", default="dlib_lfw_landmarks.json")
    a = ap.parse_args()

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat"))
    people = sorted(p for p in os.listdir(a.lfw) if os.path.isdir(os.path.join(a.lfw, p)))[:a.people]
    faces, no_face = [], []
    t0 = time.time()
    for k, person in enumerate(people):
        name = sorted(os.listdir(os.path.join(a.lfw, person)))[0]
        rel = f"{person}/{name}"
        img = np.array(Image.open(os.path.join(a.lfw, rel)).convert("RGB"))
        dets = det(img, 1)
        if len(dets) == 0:
            no_face.append(rel)
            continue
        d = max(dets, key=lambda r: r.area())
        shape = sp(img, d)
        cd = dlib.get_face_chip_details(shape, size=150, padding=0.25)
        faces.append({
            "path": rel, "width": int(img.shape[1]), "height": int(img.shape[0]),
            "n_detections": len(dets),
            "box": [d.left(), d.top(), d.right(), d.bottom()],
            "landmarks5": [[p.x, p.y] for p in shape.parts()],
            "chip_rect": [cd.rect.left(), cd.rect.top(), cd.rect.right(), cd.rect.bottom()],
            "chip_angle": cd.angle,
        })
        if (k + 1) % 250 == 0:
            print(f"  {k + 1}/{len(people)} people, {time.time() - t0:.0f}s", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"dlib": dlib.__version__, "people": len(people),
                   "params": {"detector": "get_frontal_face_detector", "upsample": 1,
                              "box_choice": "largest area", "shape_predictor": "5 points",
                              "chip_size": 150, "chip_padding": 0.25},
                   "no_face": no_face, "faces": faces}, f)
    print(f"wrote {a.out}: {len(faces)} faces from {len(people)} people, no face in {len(no_face)}")


if __name__ == "__main__":
    main()
