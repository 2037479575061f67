#!/usr/bin/env python3
"""dlib's own face-verification pipeline, as the Python `face_recognition` library runs it.

What it does
  For every image named in a pairs file:
    PIL decode -> RGB uint8 (as face_recognition.load_image_file)
    -> dlib.get_frontal_face_detector() (HOG) with upsample 1; the largest detection is kept
    -> shape_predictor_5_face_landmarks on that box
    -> face_recognition_model_v1.compute_face_descriptor(img, shape)   (num_jitters 0, padding 0.25)
  Each pair is scored by the Euclidean distance of the two 128-D descriptors; "same" iff
  distance <= threshold. Descriptors are computed once per distinct image.
  A pair is UNSCORED when either image has no detected face; such images and pairs are listed
  and counted, never dropped silently. All metrics below are over the scored pairs only.

  --no-detect treats each image as a ready aligned 150x150 chip: compute_face_descriptor(chip)
  (the network alone; images not 150x150 are resized to 150x150 with PIL bilinear, aspect not kept;
  greyscale is converted to RGB by PIL). Every pair is scored then.

Metrics
  * accuracy at the fixed threshold 0.6 (dlib's / face_recognition's default tolerance);
  * 10-fold accuracy, mean +- population std. Stratified folds: the scored same pairs and the
    scored different pairs are each cut, in input order, into 10 consecutive chunks (chunk i of
    m items is [floor(i*m/10), floor((i+1)*m/10))); fold i = chunk i of each. For each fold the
    threshold maximising accuracy on the other 9 folds is chosen exactly (candidates: below the
    minimum distance, midpoints between consecutive distinct distances, above the maximum; ties
    -> the smallest threshold; same iff distance <= threshold); accuracy on the held-out fold;
  * the best single threshold over all scored pairs (same candidate rule and tie-break) and its
    accuracy;
  * ROC AUC with "same" as the positive class and -distance as the score (ties count 1/2).

Pairs file formats (--pairs)
  * LFW pairs.txt: an optional first header line of integers (e.g. "1100" or "10 300"), then
    `name n1 n2` (same) or `name1 n1 name2 n2` (different), images `name/name_%04d.jpg`
    relative to --images;
  * CSV with header `img1,img2,same` (same: 1/0 or true/false), paths relative to --images.

Run
  python scripts/dlib_pipeline.py \
      --pairs ../shared/data/lfw/pairsDevTrain.txt --images ../shared/data/lfw/train \
      [--no-detect] [--distances-out dist.csv] [--models DIR] [--quiet]

Prints
  progress to stderr; to stdout: the unscored images and pairs, then the figures (pairs total,
  pairs scored, unscored count, accuracy at 0.6, 10-fold mean +- std, best threshold and its
  accuracy, AUC), and as the last line the same figures as one JSON object.
  --distances-out writes CSV img1,img2,same,distance (empty distance when unscored), in input order.
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import dlib
from PIL import Image

DEFAULT_MODELS = os.environ.get(
    "DLIB_MODELS",
    os.path.join(os.environ.get("CANDLE_FACE_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")), "pretrained", "dlib"))


# ----------------------------------------------------------------------------- pairs
def read_pairs(path):
    """Returns a list of (img1, img2, same:bool), paths relative to the images folder."""
    with open(path, newline="") as f:
        text = f.read()
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return []
    if lines[0].replace(" ", "").lower().startswith("img1,img2,same"):
        rows = list(csv.DictReader(lines))
        out = []
        for r in rows:
            s = r["same"].strip().lower()
            if s in ("1", "true", "yes", "same"):
                same = True
            elif s in ("0", "false", "no", "different", "diff"):
                same = False
            else:
                raise ValueError(f"bad 'same' value {r['same']!r}")
            out.append((r["img1"].strip(), r["img2"].strip(), same))
        return out
    out = []
    for i, line in enumerate(lines):
        tok = line.split()
        if i == 0 and all(t.isdigit() for t in tok):
            continue  # header count line
        if len(tok) == 3:
            n, a, b = tok[0], int(tok[1]), int(tok[2])
            out.append((f"{n}/{n}_{a:04d}.jpg", f"{n}/{n}_{b:04d}.jpg", True))
        elif len(tok) == 4:
            n1, a, n2, b = tok[0], int(tok[1]), tok[2], int(tok[3])
            out.append((f"{n1}/{n1}_{a:04d}.jpg", f"{n2}/{n2}_{b:04d}.jpg", False))
        else:
            raise ValueError(f"{path}:{i + 1}: cannot parse {line!r}")
    return out


# ----------------------------------------------------------------------------- metrics
def candidates(d):
    """Candidate thresholds, ascending: below the min, midpoints of consecutive distinct, above the max."""
    u = np.unique(np.asarray(d, np.float64))
    if len(u) == 0:
        return np.array([0.0])
    mids = (u[:-1] + u[1:]) / 2.0
    return np.concatenate([[u[0] - 1.0], mids, [u[-1] + 1.0]])


def correct_counts(d, same, thr):
    """Number of correct decisions (same iff d <= t) for each threshold in thr (vectorised, exact ints)."""
    d = np.asarray(d, np.float64)
    same = np.asarray(same, bool)
    ds = np.sort(d[same])
    dd = np.sort(d[~same])
    tp = np.searchsorted(ds, thr, side="right")
    tn = len(dd) - np.searchsorted(dd, thr, side="right")
    return tp + tn


def best_threshold(d, same):
    """(threshold, accuracy) maximising accuracy; ties -> smallest threshold."""
    c = candidates(d)
    k = correct_counts(d, same, c)
    i = int(np.argmax(k))  # first maximum = smallest threshold
    return float(c[i]), float(k[i]) / len(d)


def accuracy_at(d, same, t):
    d = np.asarray(d, np.float64)
    same = np.asarray(same, bool)
    return float(np.mean((d <= t) == same))


def fold_ids(same):
    """Stratified consecutive folds in input order: fold id 0..9 for every item."""
    same = np.asarray(same, bool)
    ids = np.empty(len(same), int)
    for cls in (True, False):
        idx = np.nonzero(same == cls)[0]
        m = len(idx)
        for i in range(10):
            ids[idx[(i * m) // 10:((i + 1) * m) // 10]] = i
    return ids


def ten_fold(d, same):
    d = np.asarray(d, np.float64)
    same = np.asarray(same, bool)
    f = fold_ids(same)
    accs, thrs = [], []
    for i in range(10):
        test, train = f == i, f != i
        t, _ = best_threshold(d[train], same[train])
        thrs.append(t)
        if test.sum() == 0:
            continue
        accs.append(accuracy_at(d[test], same[test], t))
    accs = np.array(accs)
    return float(accs.mean()), float(accs.std()), accs.tolist(), thrs  # std: population (ddof 0)


def roc_auc(d, same):
    """AUC of score = -distance, positives = same pairs; ties count 1/2 (Mann-Whitney U)."""
    d = np.asarray(d, np.float64)
    same = np.asarray(same, bool)
    pos, neg = -d[same], -d[~same]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    negs = np.sort(neg)
    lt = np.searchsorted(negs, pos, side="left")
    le = np.searchsorted(negs, pos, side="right")
    return float((lt.sum() + 0.5 * (le - lt).sum()) / (len(pos) * len(neg)))


# ----------------------------------------------------------------------------- dlib
class Dlib:
    def __init__(self, models):
        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
        self.fr = dlib.face_recognition_model_v1(
            os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat"))

    def describe_photo(self, path):
        """face_recognition's path: largest HOG detection (upsample 1), 5 landmarks, descriptor. None if no face."""
        img = np.array(Image.open(path).convert("RGB"))
        dets = self.det(img, 1)
        if len(dets) == 0:
            return None
        box = max(dets, key=lambda r: r.area())
        shape = self.sp(img, box)
        return np.array(self.fr.compute_face_descriptor(img, shape, 0), np.float64)

    def describe_chip(self, path):
        im = Image.open(path).convert("RGB")
        if im.size != (150, 150):
            im = im.resize((150, 150), Image.BILINEAR)
        chip = np.ascontiguousarray(np.array(im))
        return np.array(self.fr.compute_face_descriptor(chip, 0), np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--no-detect", action="store_true",
                    help="images are ready 150x150 chips: the network alone")
    ap.add_argument("--distances-out")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args()

    pairs = read_pairs(a.pairs)
    D = Dlib(a.models)
    images = sorted({p for pr in pairs for p in pr[:2]})
    desc = {}
    t0 = time.time()
    for k, rel in enumerate(images):
        path = os.path.join(a.images, rel)
        desc[rel] = D.describe_chip(path) if a.no_detect else D.describe_photo(path)
        if not a.quiet and (k + 1) % 100 == 0:
            print(f"  {k + 1}/{len(images)} images, {time.time() - t0:.0f}s", file=sys.stderr)
    if not a.quiet:
        print(f"  {len(images)} images described in {time.time() - t0:.1f}s", file=sys.stderr)

    dist = []
    for i1, i2, s in pairs:
        e1, e2 = desc[i1], desc[i2]
        dist.append(None if e1 is None or e2 is None else float(np.linalg.norm(e1 - e2)))

    no_face = [p for p in images if desc[p] is None]
    unscored = [(i, pr) for i, (pr, dd) in enumerate(zip(pairs, dist)) if dd is None]
    mode = "no-detect (network on 150x150 chips)" if a.no_detect else "HOG(upsample 1)+5pt+ResNet"
    print(f"pairs file: {a.pairs}\nimages: {a.images}\nmode: {mode}")
    print(f"images: {len(images)} distinct, no face detected in {len(no_face)}")
    for p in no_face:
        print(f"  no face: {p}")
    print(f"unscored pairs: {len(unscored)}")
    for i, (i1, i2, s) in unscored:
        print(f"  unscored #{i}: {i1} {i2} {'same' if s else 'different'}")

    sc = [(dd, pr[2]) for pr, dd in zip(pairs, dist) if dd is not None]
    d = np.array([x[0] for x in sc], np.float64)
    same = np.array([x[1] for x in sc], bool)
    res = {
        "pairs_file": a.pairs, "mode": "no-detect" if a.no_detect else "detect",
        "pairs_total": len(pairs), "pairs_scored": int(len(d)), "pairs_unscored": len(unscored),
        "same_scored": int(same.sum()), "different_scored": int((~same).sum()),
        "images_no_face": len(no_face),
    }
    if len(d):
        m, sd, accs, thrs = ten_fold(d, same)
        bt, ba = best_threshold(d, same)
        res.update({
            "acc_at_0.6" if a.threshold == 0.6 else f"acc_at_{a.threshold}": accuracy_at(d, same, a.threshold),
            "tenfold_mean": m, "tenfold_std": sd, "tenfold_accs": accs, "tenfold_thresholds": thrs,
            "best_threshold": bt, "best_threshold_acc": ba, "auc": roc_auc(d, same),
            "mean_dist_same": float(d[same].mean()) if same.any() else None,
            "mean_dist_different": float(d[~same].mean()) if (~same).any() else None,
        })
        print(f"pairs scored / total: {len(d)} / {len(pairs)}  (same {same.sum()}, different {(~same).sum()})")
        print(f"accuracy at {a.threshold}: {accuracy_at(d, same, a.threshold) * 100:.2f}%")
        print(f"10-fold accuracy: {m * 100:.2f}% +- {sd * 100:.2f}% (population std)")
        print(f"  fold accuracies: {' '.join(f'{x * 100:.2f}' for x in accs)}")
        print(f"  fold thresholds: {' '.join(f'{x:.4f}' for x in thrs)}")
        print(f"best single threshold: {bt:.4f} -> {ba * 100:.2f}%")
        print(f"ROC AUC: {roc_auc(d, same):.5f}")
    print(json.dumps(res))

    if a.distances_out:
        with open(a.distances_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["img1", "img2", "same", "distance"])
            for (i1, i2, s), dd in zip(pairs, dist):
                w.writerow([i1, i2, 1 if s else 0, "" if dd is None else repr(dd)])


if __name__ == "__main__":
    main()
