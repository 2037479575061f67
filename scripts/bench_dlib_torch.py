#!/usr/bin/env python3
"""dlib's face-recognition ResNet in plain PyTorch, from candle-face's converted weights.

The same network as candle-face's `DlibResNet` (src/model/dlib_resnet.rs), with dlib's layer
semantics: 7x7/2 unpadded conv + affine + relu, 3x3/2 unpadded max pool; residual units of two
3x3 convs each followed by a fixed per-channel affine (scale, shift; the conv bias is folded into
the shift), relu between them; a downsampling unit's first conv has stride 2 and no padding and
its shortcut is a 2x2/2 average pool; dlib's `add_prev` adds tensors of different shapes as if the
smaller were zero-padded at the end of each axis (channels, rows, cols); relu after the sum;
global average pool; linear 256->128 without bias. Input: 150x150 RGB chips,
(pixel - mean_c) / 256 with the means of config.json `preprocess.channel_mean`.

  1. parity: the descriptors of dlib's own chips in shared/fixtures/dlib_parity.safetensors
     against dlib's (`chip_descriptors`); prints max |delta| (must be < 1e-4, else exit 1);
  2. timing (torch.set_num_threads(THREADS), torch.inference_mode()): batch-1 median latency
     and batch-32 throughput (the fixture chips cycled; noise chips without the fixture),
     preprocessing included as in candle-face's `embed_prepared`.

Prints one JSON line per benchmark, with the names and fields of candle-face's benches/dlib.rs:
`dlib-resnet-infer` (impl "pytorch"), plus `dlib-resnet-parity`.

  $TORCH_PYTHON scripts/bench_dlib_torch.py [--threads 2] [--model models/dlib-resnet-v1]
Environment: RUNS scales the number of timed repetitions (default 1.0); CANDLE_FACE_SHARED
(else ../shared next to the crate).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CANDLE_FACE_SHARED", os.path.join(ROOT, "..", "shared"))


def runs(n):
    scale = float(os.environ.get("RUNS", "1") or 1)
    return max(1, round(n * scale))


class DlibResNet(torch.nn.Module):
    def __init__(self, tensors, cfg):
        super().__init__()
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items()}
        arch = cfg["architecture"]
        self.stem = self._conv(t, "stem", 2)
        self.units = []
        i = 0
        for stage in arch["stages"]:
            for u in range(stage["units"]):
                down = stage["downsample"] and u == 0
                self.units.append((self._conv(t, f"units.{i}.conv1", 2 if down else 1),
                                   self._conv(t, f"units.{i}.conv2", 1), down))
                i += 1
        assert f"units.{i}.conv1.weight" not in t, "more units in the weights than in config.json"
        self.fc = t["fc.weight"]
        pre = cfg["preprocess"]
        mean = pre.get("channel_mean") or [pre["mean"]] * 3
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = float(pre["std"])

    @staticmethod
    def _conv(t, name, stride):
        w = t[f"{name}.weight"]
        # dlib pads stride-1 convolutions by half the kernel and strided ones not at all.
        pad = w.shape[-1] // 2 if stride == 1 else 0
        return (w, t[f"{name}.scale"].view(1, -1, 1, 1), t[f"{name}.shift"].view(1, -1, 1, 1), stride, pad)

    @staticmethod
    def _apply(c, x):
        w, scale, shift, stride, pad = c
        return torch.addcmul(shift, F.conv2d(x, w, stride=stride, padding=pad), scale)

    @staticmethod
    def _add_prev(a, b):
        if a.shape == b.shape:
            return a + b
        c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

        def pad(x):  # F.pad: last axis first, (before, after) pairs
            return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

        return pad(a) + pad(b)

    def preprocess(self, chips_u8):
        """(N, H, W, 3) uint8 numpy -> (N, 3, H, W) float32."""
        x = torch.from_numpy(chips_u8).permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    def forward(self, x):
        h = F.relu(self._apply(self.stem, x))
        h = F.max_pool2d(h, 3, 2)
        for c1, c2, down in self.units:
            y = F.relu(self._apply(c1, h))
            y = self._apply(c2, y)
            s = F.avg_pool2d(h, 2, 2) if down else h
            h = F.relu(self._add_prev(y, s))
        return h.mean(dim=(2, 3)) @ self.fc.t()


def timed(fn, warmup, n):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "dlib-resnet-v1"))
    ap.add_argument("--fixture", default=os.path.join(SHARED, "fixtures", "dlib_parity.safetensors"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    cfg = json.load(open(os.path.join(a.model, "config.json")))
    net = DlibResNet(load_file(os.path.join(a.model, cfg.get("weights", "model.safetensors"))), cfg).eval()

    parity = None
    if os.path.exists(a.fixture):
        fx = load_file(a.fixture)
        pool = fx["chips"]
        with torch.inference_mode():
            got = net(net.preprocess(pool)).numpy()
        parity = float(np.abs(got - fx["chip_descriptors"]).max())
        print(json.dumps({"bench": "dlib-resnet-parity", "impl": "pytorch", "chips": int(pool.shape[0]),
                          "max_abs_diff": parity, "ok": parity < 1e-4}), flush=True)
        source = "fixture"
    else:
        print(f"{a.fixture} not found: no parity check, timing on noise chips", file=sys.stderr)
        pool = np.random.default_rng(0).integers(0, 256, (32, 150, 150, 3), dtype=np.uint8)
        source = "synthetic"

    batch32 = np.ascontiguousarray(pool[np.arange(32) % pool.shape[0]])
    k = [0]

    def one():
        i = k[0] % pool.shape[0]
        k[0] += 1
        net(net.preprocess(pool[i:i + 1])).numpy()

    with torch.inference_mode():
        lat = statistics.median(timed(one, 3, runs(30)))
        b32 = statistics.median(timed(lambda: net(net.preprocess(batch32)).numpy(), 1, runs(5)))
    print(json.dumps({
        "bench": "dlib-resnet-infer", "impl": "pytorch", "input": 150, "chips": source,
        "what": "preprocess + network on 150x150 chips (plain torch F.conv2d)",
        "batch1_latency_ms": 1000.0 * lat, "batch32_images_per_s": 32.0 / b32,
        "batch32_ms_per_batch": 1000.0 * b32, "parity_max_abs_diff": parity,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }), flush=True)
    if parity is not None and not parity < 1e-4:
        print(f"parity FAILED: max |delta| = {parity} >= 1e-4", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
