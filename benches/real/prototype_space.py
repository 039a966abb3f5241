#!/usr/bin/env python3
"""How the limits of a `--scoring-space` model could be measured: a numpy check on the models
and scores of a `benches/real/run.sh` work directory (session 26, issue 20). Not TADS itself.

For each JumpStarter series it recomputes the training and test rows in the scoring space as
`prototype_scales.py` does (each metric less the previous UTC day's median, the first test day
less the last training day's, less the model's daily cycle, over the model's scale), scores them
with the model's main PCA and its `scoring_space.residual`, and compares ways of choosing the
limits of the four signals (SPE, T², largest |z|, the second PCA's SPE) by the fused score's mean
AU-PRC and by the share of normal test rows at or above 1.0:

  q0.95 / q0.99      each limit raised to that quantile of the signal over the training rows
  cut5 / cut8 / cut10  the 0.99 quantile over the rows with every |z| <= the cut
  raw-normal         the 0.99 quantile over the rows the raw model scores below 1.0

    TADS_TRAIN_ARGS=--scoring-space benches/real/run.sh --out /tmp/real-space --report none
    python3 prototype_space.py /tmp/real-space [jumpstarter_d2 jumpstarter_d3]

Needs numpy, pandas, pyarrow, scikit-learn (as prototype_scales.py).
"""

import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import average_precision_score as ap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prototype_scales as P  # noqa: E402


def series(root, work, name):
    for s in sorted(os.listdir(os.path.join(root, name))):
        if not os.path.isdir(os.path.join(root, name, s)):
            continue
        test = pq.read_table(os.path.join(root, name, s, "test.parquet")).to_pandas()
        if test.label.sum() == 0:
            continue
        train = pq.read_table(os.path.join(root, name, s, "train.parquet")).to_pandas()
        model = json.load(open(os.path.join(work, "models", f"{name}__{s}", "model.json")))
        scored = pq.read_table(os.path.join(work, "scores", name, s, "scored", "test.parquet"))
        yield train, test, model, scored.to_pandas()


def signals(z, m):
    """The main PCA's SPE and T², the largest |z|, the second PCA's SPE."""
    p = m["pca"]
    y = z - np.array(p["mean"])
    t = y @ np.array(p["components"])
    lam = np.array(p["eigenvalues"][: p["k"]])
    spe = (y * y).sum(1) - (t * t).sum(1)
    t2 = (t * t / np.where(lam > 0, lam, np.inf)).sum(1)
    r = m["scoring_space"]["residual"]
    return spe, t2, np.abs(z).max(1), P.spe(z, np.array(r["pca"]["mean"]), np.array(r["pca"]["components"]))


def main(work, sets, root):
    for name in sets:
        out = {}
        for train, test, m, sc in series(root, work, name):
            cols, scale = m["features"], np.array(m["scale"])
            cyc = np.array(m["seasonal"]["profile"]) if m.get("seasonal") else np.zeros((24, len(cols)))
            r_tr, med = P.residuals(train, cols, cyc, None)
            r_te, _ = P.residuals(test, cols, cyc, med.iloc[-1].values)
            first = (train.ts.dt.floor("D") == train.ts.dt.floor("D").iloc[0]).values
            clean = lambda r: np.nan_to_num(r / scale, nan=0.0, posinf=0.0, neginf=0.0)  # noqa: E731
            z_tr, z_te = clean(r_tr[~first]), clean(r_te)
            tr, te = signals(z_tr, m), signals(z_te, m)
            th, tail = m["thresholds"], m["thresholds"].get("tail") or {}
            base = [max(th["spe_jm_999"] or 1e9, tail.get("spe") or 0), max(th["t2_999"], tail.get("t2") or 0),
                    max(th["mad_z"], tail.get("zmax") or 0), 0.0]
            x_raw = clean(train[cols].values[~first] - np.array(m["median"]))
            raw = signals(x_raw, m)
            raw_fused = np.maximum.reduce([raw[i] / base[i] for i in range(3)])
            keeps = {"q0.95": (0.95, None), "q0.99": (0.99, None)}
            for cut in (5, 8, 10):
                keeps[f"cut{cut}"] = (0.99, np.abs(z_tr).max(1) <= cut)
            keeps["raw-normal"] = (0.99, raw_fused < 1)
            y = test.label.values
            lims = {}
            for k, (q, keep) in keeps.items():
                keep = np.ones(len(z_tr), bool) if keep is None else keep
                lims[k] = [max(base[i], np.quantile(tr[i][keep], q)) for i in range(4)]
            # Robust to anomalies in training: each limit scaled by the ratio of the signal's
            # quantile `rq` in the scoring space to the same quantile over the raw rows; the
            # second PCA's limit from its own quantile `rq` times the main SPE's limit/quantile.
            for rq in (0.5, 0.9, 0.95, 0.99):
                ratio = [np.quantile(tr[i], rq) / max(np.quantile(raw[i], rq), 1e-300) for i in range(3)]
                lim = [base[i] * max(1.0, ratio[i]) for i in range(3)]
                lim.append(np.quantile(tr[3], rq) * base[0] / max(np.quantile(raw[0], rq), 1e-300))
                lims[f"ratio{rq}"] = lim
                lims[f"ratio{rq}+q99res"] = lim[:3] + [lims["q0.99"][3]]
                out.setdefault((f"ratio{rq}", "spe/t2/z ratio"), []).append(ratio)
            # The 0.99 quantile extrapolated from the 0.5 and 0.9 ones (robust to a tenth of
            # the rows being anomalies): an exponential tail (linear in -log(1-p)) or a Pareto
            # one (log-linear).
            L = np.log(10) / (np.log(10) - np.log(2))  # (-log .01 - -log .1) / (-log .1 - -log .5)
            for kind in ("exp", "pareto"):
                lim = []
                for i in range(4):
                    q50, q90 = np.quantile(tr[i], 0.5), np.quantile(tr[i], 0.9)
                    e = q90 + (q90 - q50) * L if kind == "exp" else q90 * (q90 / max(q50, 1e-300)) ** L
                    lim.append(max(base[i], e))
                lims[f"extrap-{kind}"] = lim
                out.setdefault((f"extrap-{kind}", "q99/extrap ratio"), []).append(
                    [np.quantile(tr[i], 0.99) / lim[i] for i in range(4)])
            for k, limits in lims.items():
                fused = np.maximum.reduce([te[i] / limits[i] for i in range(4)])
                out.setdefault((k, "AU-PRC"), []).append(ap(y, fused))
                out.setdefault((k, "normal >= 1"), []).append(np.mean(fused[y == 0] >= 1))
        for (k, what), v in out.items():
            if what.endswith("ratio"):
                print(f"{name}\t{k}\t{what} medians\t{np.round(np.median(np.array(v), 0), 2)}")
            else:
                print(f"{name}\t{k}\t{what}\t{np.mean(v):.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1], sys.argv[2:] or ["jumpstarter_d2", "jumpstarter_d3"],
         os.path.join(here, "..", "..", "..", "shared", "data", "real"))
