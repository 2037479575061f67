#!/usr/bin/env python3
"""Timing of dlib's own face-recognition pipeline on this machine (CPU; dlib-bin has no BLAS/CUDA).

What it does
  (a) "dlib_net_b1": the ResNet alone on ready aligned 150x150 RGB chips, one chip per call
      (--chips fixture, the default when it exists: dlib's own 12 chips from
      shared/fixtures/dlib_parity.safetensors, the inputs candle-face's benches/dlib.rs and
      scripts/bench_dlib_torch.py time, cycled to 32; --chips lfw: 32 chips made once with
      dlib.get_face_chip from the first LFW people's photos):
      face_recognition_model_v1.compute_face_descriptor(chip); median ms per chip over --b1-runs
      (>= 30) calls after warm-up.
      "dlib_net_b32": the same network on a Python list of 32 chips per call (the batched overload
      compute_face_descriptor(list_of_chips) that the dlib 20 Python API has); chips/s from the
      median time of --b32-runs calls after warm-up.
  (b) "dlib_verify": the whole verify of two photos as the `face_recognition` library does it:
      PIL decode of both JPEGs -> RGB array, HOG detector upsample 1, largest box, 5-point
      landmarks, compute_face_descriptor(img, shape) (no jitter), Euclidean distance; median ms
      over --verify-runs (>= 10) runs after warm-up, plus the median of each stage (summed over
      the two photos).
  Threads: the OS thread count of the process is sampled every 2 ms while the batch-32 network
  and the verify run (the sampler thread itself is subtracted), and CPU time / wall time is reported
  for each benchmark (about 1.0 = one core busy).

Run
  python scripts/dlib_bench.py [--lfw ../shared/data/lfw/train]
      [--img1 Aaron_Peirsol/Aaron_Peirsol_0001.jpg --img2 Aaron_Peirsol/Aaron_Peirsol_0002.jpg]
  Run it on an otherwise idle machine for meaningful numbers. RUNS (default 1.0) scales the
  default run counts (not below the minimums). scripts/compare-dlib.sh runs it beside
  candle-face and PyTorch.

Prints
  one JSON line per benchmark: dlib_env (dlib version, build flags, os.cpu_count(), affinity,
  CPU model), dlib_net_b1, dlib_net_b32, dlib_verify; each with "impl": "dlib" and, for the
  comparison with candle-face's benches/dlib.rs, its fields: batch1_latency_ms (dlib_net_b1),
  batch32_images_per_s (dlib_net_b32), median_ms (dlib_verify). Note the detector differs:
  dlib's verify uses its HOG detector, candle-face's verify uses MTCNN (then both use dlib's
  5-point shape predictor, chip and ResNet).
"""
import argparse
import glob
import json
import os
import statistics
import threading
import time

import numpy as np
import dlib
from PIL import Image

SHARED = os.environ.get("CANDLE_FACE_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
MODELS = os.path.join(SHARED, "pretrained", "dlib")


def nthreads():
    return len(os.listdir("/proc/self/task"))


class ThreadSampler:
    """Max OS thread count of this process while active (minus the sampler itself)."""

    def __init__(self):
        self.max = 0
        self._stop = threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.max = max(self.max, nthreads() - 1)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    cpu_ratio = (time.process_time() - c0) / (time.perf_counter() - w0)
    return ts, cpu_ratio


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", default=os.path.join(SHARED, "data", "lfw", "train"))
    ap.add_argument("--img1", default="Aaron_Peirsol/Aaron_Peirsol_0001.jpg")
    ap.add_argument("--img2", default="Aaron_Peirsol/Aaron_Peirsol_0002.jpg")
    scale = float(os.environ.get("RUNS", "1") or 1)
    ap.add_argument("--b1-runs", type=int, default=max(30, round(50 * scale)))
    ap.add_argument("--b32-runs", type=int, default=max(1, round(5 * scale)))
    ap.add_argument("--verify-runs", type=int, default=max(10, round(20 * scale)))
    fixture = os.path.join(SHARED, "fixtures", "dlib_parity.safetensors")
    ap.add_argument("--chips", choices=("fixture", "lfw"),
                    default="fixture" if os.path.exists(fixture) else "lfw")
    a = ap.parse_args()
    assert a.b1_runs >= 30 and a.verify_runs >= 10

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat"))
    fr = dlib.face_recognition_model_v1(os.path.join(MODELS, "dlib_face_recognition_resnet_model_v1.dat"))

    so = glob.glob(os.path.join(os.path.dirname(dlib.__file__), "_dlib_pybind11*.so")) or \
        glob.glob(os.path.join(os.path.dirname(os.path.dirname(dlib.__file__)), "_dlib_pybind11*.so"))
    env = {
        "bench": "dlib_env", "dlib": dlib.__version__,
        "DLIB_USE_BLAS": getattr(dlib, "DLIB_USE_BLAS", None),
        "DLIB_USE_LAPACK": getattr(dlib, "DLIB_USE_LAPACK", None),
        "DLIB_USE_CUDA": getattr(dlib, "DLIB_USE_CUDA", None),
        "os_cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(), "threads_at_start": nthreads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(env), flush=True)

    chips = []
    if a.chips == "fixture":
        from safetensors.numpy import load_file
        fx = load_file(fixture)["chips"]
        chips = [np.ascontiguousarray(fx[i % fx.shape[0]]) for i in range(32)]
    # Else 32 real aligned chips from the first LFW people with a detected face.
    for person in sorted(os.listdir(a.lfw)) if not chips else []:
        f = sorted(os.listdir(os.path.join(a.lfw, person)))[0]
        img = np.array(Image.open(os.path.join(a.lfw, person, f)).convert("RGB"))
        dets = det(img, 1)
        if len(dets):
            shape = sp(img, max(dets, key=lambda r: r.area()))
            chips.append(np.ascontiguousarray(dlib.get_face_chip(img, shape, size=150, padding=0.25)))
        if len(chips) == 32:
            break

    # (a) network alone, batch 1
    k = [0]

    def one():
        fr.compute_face_descriptor(chips[k[0] % 32])
        k[0] += 1

    with ThreadSampler() as s1:
        ts, ratio = timed(one, a.b1_runs, warmup=5)
    print(json.dumps({
        "bench": "dlib_net_b1", "impl": "dlib", "chips": a.chips,
        "what": "compute_face_descriptor(150x150 chip), 1 chip per call",
        "runs": a.b1_runs, "median_ms": round(statistics.median(ts) * 1e3, 2),
        "batch1_latency_ms": statistics.median(ts) * 1e3,
        "min_ms": round(min(ts) * 1e3, 2), "mean_ms": round(statistics.mean(ts) * 1e3, 2),
        "chips_per_s": round(1.0 / statistics.median(ts), 2),
        "cpu_time_over_wall": round(ratio, 2), "max_threads_seen": s1.max}), flush=True)

    # (a) network alone, batch 32 (list overload)
    try:
        with ThreadSampler() as s32:
            ts, ratio = timed(lambda: fr.compute_face_descriptor(chips), a.b32_runs, warmup=1)
        med = statistics.median(ts)
        print(json.dumps({
            "bench": "dlib_net_b32", "impl": "dlib", "chips": a.chips,
            "what": "compute_face_descriptor(list of 32 chips) per call",
            "batch32_images_per_s": 32 / med,
            "runs": a.b32_runs, "median_ms_per_batch": round(med * 1e3, 1),
            "ms_per_chip": round(med * 1e3 / 32, 2), "chips_per_s": round(32 / med, 2),
            "cpu_time_over_wall": round(ratio, 2), "max_threads_seen": s32.max}), flush=True)
    except TypeError as e:
        print(json.dumps({"bench": "dlib_net_b32", "error": f"no batched overload: {e}"}), flush=True)

    # (b) whole verify of two photos, face_recognition style
    p1, p2 = os.path.join(a.lfw, a.img1), os.path.join(a.lfw, a.img2)
    stages = {"decode": [], "detect": [], "landmarks": [], "descriptor": []}
    out = {}

    def describe(path, st):
        t = time.perf_counter()
        img = np.array(Image.open(path).convert("RGB"))
        t1 = time.perf_counter()
        dets = det(img, 1)
        t2 = time.perf_counter()
        shape = sp(img, max(dets, key=lambda r: r.area()))
        t3 = time.perf_counter()
        e = np.array(fr.compute_face_descriptor(img, shape))
        t4 = time.perf_counter()
        for key, v in zip(stages, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
            st[key] += v
        return e

    def verify():
        st = dict.fromkeys(stages, 0.0)
        e1, e2 = describe(p1, st), describe(p2, st)
        out["distance"] = float(np.linalg.norm(e1 - e2))
        for key in stages:
            stages[key].append(st[key])

    with ThreadSampler() as sv:
        ts, ratio = timed(verify, a.verify_runs, warmup=2)
    print(json.dumps({
        "bench": "dlib_verify", "impl": "dlib",
        "what": "2 JPEGs: PIL decode + HOG(upsample 1) + 5pt landmarks + descriptor + distance",
        "img1": a.img1, "img2": a.img2, "distance": round(out["distance"], 5),
        "runs": a.verify_runs, "median_ms": round(statistics.median(ts) * 1e3, 2),
        "min_ms": round(min(ts) * 1e3, 2),
        "stage_median_ms_both_photos": {k: round(statistics.median(v[-a.verify_runs:]) * 1e3, 2)
                                        for k, v in stages.items()},
        "cpu_time_over_wall": round(ratio, 2), "max_threads_seen": sv.max}), flush=True)


if __name__ == "__main__":
    main()
