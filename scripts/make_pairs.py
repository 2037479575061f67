#!/usr/bin/env python3
"""Writes verification pairs files (CSV `img1,img2,same`) for the small face sets.

What it does
  * faceapi_bbt.csv: every same-person pair within each of the 8 people of
    shared/data/small/faceapi_bbt (5 images each -> 8 x 10 = 80 same pairs), then an equal number
    of different-person pairs drawn without replacement with a fixed seed.
  * yaleB_test10.csv: the last 10 of the sorted person folders of shared/data/yaleB (yaleB14 is
    absent from the set, so these are yaleB30..yaleB39), 300 same pairs then 300 different pairs,
    both drawn without replacement with a fixed seed.
  Paths are relative to the set's folder (e.g. yaleB31/yaleB31_P00A+000E+00.png), so use
  `--images shared/data/small/faceapi_bbt` or `--images shared/data/yaleB` with the pairs file.
  Images: files ending .png/.pgm/.jpg/.jpeg, sorted by name. Same pairs come first, then the
  different pairs; within a pair the two paths are in sorted order.

Run
  python3 scripts/make_pairs.py [--data ../shared/data] [--out pairs] [--seed 1234]
  (standard library only)

Prints
  the files written, the Yale B people used, and the pair counts.
"""
import argparse
import csv
import itertools
import os
import random

EXT = (".png", ".pgm", ".jpg", ".jpeg")


def people_images(root):
    out = {}
    for p in sorted(os.listdir(root)):
        d = os.path.join(root, p)
        if os.path.isdir(d):
            imgs = sorted(f for f in os.listdir(d) if f.lower().endswith(EXT))
            if imgs:
                out[p] = [f"{p}/{f}" for f in imgs]
    return out


def draw_different(people, n, rng):
    """n distinct unordered different-person pairs, drawn without replacement."""
    names = sorted(people)
    seen, out = set(), []
    while len(out) < n:
        a, b = rng.sample(names, 2)
        pr = tuple(sorted((rng.choice(people[a]), rng.choice(people[b]))))
        if pr not in seen:
            seen.add(pr)
            out.append(pr)
    return out


def write(path, same, diff):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img1", "img2", "same"])
        for a, b in same:
            w.writerow([a, b, 1])
        for a, b in diff:
            w.writerow([a, b, 0])
    print(f"wrote {path}: {len(same)} same + {len(diff)} different")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.environ.get("CANDLE_FACE_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")), "data"))
    ap.add_argument("--out", default="pairs")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    # face-api.js Big Bang Theory crops: all same pairs + as many different pairs.
    bbt = people_images(os.path.join(a.data, "small", "faceapi_bbt"))
    same = [tuple(sorted(c)) for p in sorted(bbt) for c in itertools.combinations(bbt[p], 2)]
    diff = draw_different(bbt, len(same), random.Random(a.seed))
    write(os.path.join(a.out, "faceapi_bbt.csv"), same, diff)

    # Extended Yale B: last 10 sorted people, 300 same + 300 different.
    yale_all = people_images(os.path.join(a.data, "yaleB"))
    last10 = sorted(yale_all)[-10:]
    print("Yale B people used:", " ".join(last10))
    yale = {p: yale_all[p] for p in last10}
    rng = random.Random(a.seed)
    all_same = [tuple(sorted(c)) for p in last10 for c in itertools.combinations(yale[p], 2)]
    same = rng.sample(all_same, 300)
    diff = draw_different(yale, 300, rng)
    write(os.path.join(a.out, "yaleB_test10.csv"), same, diff)


if __name__ == "__main__":
    main()
