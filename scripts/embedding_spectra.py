"""Spectra of the between-person and within-person covariance of real embeddings, written as
examples/gallery_bench/spectra.rs (the `face` shape of the gallery benchmark).

    candle-face embed ../shared/data/lfw/train --out lfw_train.safetensors
    python scripts/embedding_spectra.py lfw_train.safetensors > examples/gallery_bench/spectra.rs

Needs numpy and safetensors. People are the folders of the embedded paths; only people with at
least two faces count. Within: the pooled covariance of faces about their person's mean.
Between: the covariance of the person means less the within part those means still carry
(Sigma_w times the mean of 1/n). Also prints (on stderr) the same-person and
different-person distances of the real faces, to compare with the generator's.
"""
import json, sys
import numpy as np
from safetensors import safe_open

path = sys.argv[1]
with safe_open(path, "np") as f:
    emb = f.get_tensor("embeddings").astype(np.float64)
    paths = json.loads(f.metadata()["paths"])
people = {}
for i, p in enumerate(paths):
    people.setdefault(p.replace("\\", "/").split("/")[-2], []).append(i)
groups = [ix for ix in people.values() if len(ix) >= 2]
means = np.stack([emb[ix].mean(0) for ix in groups])
dev = np.concatenate([emb[ix] - emb[ix].mean(0) for ix in groups])
dof = sum(len(ix) - 1 for ix in groups)
within = dev.T @ dev / dof
inv_n = np.mean([1.0 / len(ix) for ix in groups])
between = np.cov(means.T) - within * inv_n


def sds(c):
    w = np.linalg.eigvalsh((c + c.T) / 2)[::-1]
    return np.sqrt(np.clip(w, 0, None))


rng = np.random.default_rng(0)
same = [np.linalg.norm(emb[a] - emb[b]) for ix in groups for a, b in [rng.choice(ix, 2, False)]]
a, b = rng.integers(0, len(emb), (2, 5000))
diff = [np.linalg.norm(emb[i] - emb[j]) for i, j in zip(a, b) if paths[i].split("/")[-2] != paths[j].split("/")[-2]]
print(f"{len(groups)} people, {sum(map(len, groups))} faces; same-person distance median "
      f"{np.median(same):.3f}, different-person median {np.median(diff):.3f}", file=sys.stderr)


def rust(name, v, doc):
    body = ",\n".join("    " + ", ".join(f"{x:.6f}" for x in v[i:i + 8]) for i in range(0, len(v), 8))
    return f"/// {doc}\npub const {name}: [f32; {len(v)}] = [\n{body},\n];\n"


print("//! Standard deviations along the principal axes (largest first) of the default model's")
print(f"//! embeddings of LFW's training people ({len(groups)} people with two or more faces,")
print(f"//! {sum(map(len, groups))} faces), made by `scripts/embedding_spectra.py`.\n")
print(rust("BETWEEN_SD", sds(between), "Between people: the spread of the people's own embeddings."))
print(rust("WITHIN_SD", sds(within), "Within a person: the spread of one person's faces."))
