#!/usr/bin/env python3
"""A prototype of TADS's scoring space in numpy: how per-metric scales and the space the PCA is
fitted in change how well the scores rank labelled rows (mean AU-PRC over series, threshold-free).

Not TADS itself: an approximation written to choose what to build (session 18, issue 20). Each
row is measured as the scoring plan measures it — each metric less the previous UTC day's median
(the first test day: the last training day's; the first training day: a trailing median) less an
hour-of-day cycle learnt from the training days — and divided by a per-metric scale:

  mad      the MAD scale (the mean absolute deviation's where the MAD is 0), TADS before session 18
  floor    max(MAD scale, (q99.5 - q0.5) / (4 * 2.576)) of the raw training values: TADS's default
  full     max(MAD scale, (q99.5 - q0.5) / (2 * 2.576)): the first, rejected version

Scores: `max`, the largest |z| over the metrics (the MAD signal); `spe-raw`, the SPE of a PCA
fitted on the training rows as TADS fits it (each metric less its median, over its scale, rows
inside |z| <= 5); `spe-resid`, fitted on the residuals instead; `spe-both`, the larger of the two
SPEs, each over its own training 99.5 % quantile.

    python3 prototype_scales.py real [--data ../shared/data/real] [SET ...]
    python3 prototype_scales.py generated DIR   # a `tads generate` dataset with anomaly labels

With `generated` (fits on the data itself, as the quality test trains on the data it scores), it
prints the SPE's AU-PRC per anomaly type against the normal rows, for the raw, residual and both
fits. Needs numpy, pandas, pyarrow, scikit-learn (benches/real/requirements.txt plus pandas).
"""

import argparse
import os

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from sklearn.metrics import average_precision_score

Z995 = 2.5758293035489
JUMPSTARTER_TRAILING = 144  # rows of trailing median for a day without a previous day (12 h)


def robust(x):
    """(median, MAD scale or mean-AD scale or 1) of the finite values."""
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return 0.0, 1.0
    med = np.median(x)
    ad = np.abs(x - med)
    mad = np.median(ad) * 1.4826
    if mad > 0:
        return med, mad
    mean_ad = ad.mean() * 1.2533
    return med, (mean_ad if mean_ad > 0 else 1.0)


def residuals(df, cols, cycle, prev_last, medians=None):
    """Rows less the previous day's median (or `medians`, a level per day) and the hour's
    cycle; the day medians."""
    day = df.ts.dt.floor("D")
    if medians is None:
        medians = df.groupby(day)[cols].median()
    prev = medians.shift(1)
    if prev_last is not None:
        prev.iloc[0] = prev_last
    base = prev.reindex(day).values
    missing = np.isnan(base)
    if missing.any():
        trailing = df[cols].rolling(JUMPSTARTER_TRAILING, min_periods=1).median().shift(1).bfill()
        base = np.where(missing, trailing.values, base)
    return df[cols].values - base - cycle[df.ts.dt.hour.values], medians


def hour_cycle(df, cols):
    day_median = df.groupby(df.ts.dt.floor("D"))[cols].transform("median")
    hourly = (df[cols] - day_median).groupby(df.ts.dt.hour).median()
    return hourly.reindex(range(24)).fillna(0).values


def scales_of(train, cols):
    x = train[cols].values
    sc = np.array([robust(x[:, j])[1] for j in range(len(cols))])
    lo, hi = np.nanquantile(x, 0.005, axis=0), np.nanquantile(x, 0.995, axis=0)
    return {
        "mad": sc,
        "floor": np.maximum((hi - lo) / (4 * Z995), sc),
        "full": np.maximum((hi - lo) / (2 * Z995), sc),
    }


def pca_fit(z):
    z = z[np.all(np.isfinite(z), axis=1)]
    mu = z.mean(0)
    w, v = np.linalg.eigh(np.atleast_2d(np.cov((z - mu).T)))
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    k = min(int(np.searchsorted(np.cumsum(w) / w.sum(), 0.95) + 1), max(1, z.shape[1] - 1))
    return mu, v[:, :k]


def spe(z, mu, p):
    y = np.nan_to_num(z - mu)
    r = y - (y @ p) @ p.T
    return (r * r).sum(1)


def scorers(train, cols, scale, r_train, keep):
    """name -> function of residual rows, for one series and one scale."""
    med = np.array([robust(train[c].values)[0] for c in cols])

    def z(r):
        out = r / scale
        return np.where(np.isfinite(out), out, 0.0)[:, keep]

    out = {"max": lambda r: np.abs(z(r)).max(1)}
    if keep.sum() < 2:
        return out
    raw = ((train[cols].values - med) / scale)[:, keep]
    raw = raw[np.all(np.abs(np.nan_to_num(raw)) <= 5, axis=1)]
    _, p_raw = pca_fit(raw)
    mu_raw = np.zeros(p_raw.shape[0])  # the plan's residuals are centred by the baseline
    mu_res, p_res = pca_fit(z(r_train))
    q_raw = np.quantile(spe(z(r_train), mu_raw, p_raw), 0.995)
    q_res = np.quantile(spe(z(r_train), mu_res, p_res), 0.995)
    out["spe-raw"] = lambda r: spe(z(r), mu_raw, p_raw)
    out["spe-resid"] = lambda r: spe(z(r), mu_res, p_res)
    out["spe-both"] = lambda r: np.maximum(
        spe(z(r), mu_raw, p_raw) / q_raw, spe(z(r), mu_res, p_res) / q_res
    )
    return out


def real_series(root, name):
    for s in sorted(os.listdir(os.path.join(root, name))):
        p = os.path.join(root, name, s)
        if not os.path.isdir(p):
            continue
        if os.path.exists(os.path.join(p, "train.parquet")):
            yield pq.read_table(os.path.join(p, "train.parquet")).to_pandas(), pq.read_table(
                os.path.join(p, "test.parquet")
            ).to_pandas()
        else:  # the univariate sets: NAB's is_train, else the first 30 %
            d = pq.read_table(os.path.join(p, "data.parquet")).to_pandas()
            m = d.is_train.values if "is_train" in d else np.arange(len(d)) < int(0.3 * len(d))
            yield d[m].drop(columns=["label"]).reset_index(drop=True), d[~m].reset_index(drop=True)


def real(root, sets):
    for name in sets:
        ap = {}
        for train, test in real_series(root, name):
            cols = [c for c in train.columns if c.startswith("m") or c == "value"]
            keep = np.array([np.nanstd(train[c].values) > 0 for c in cols])
            if not keep.any():
                continue
            cycle = hour_cycle(train, cols)
            r_train, medians = residuals(train, cols, cycle, None)
            r_test, _ = residuals(test, cols, cycle, medians.iloc[-1].values)
            first = (train.ts.dt.floor("D") == train.ts.dt.floor("D").iloc[0]).values
            if (~first).sum() > 50:
                r_train = r_train[~first]
            if test.label.sum() == 0:
                continue
            for sname, scale in scales_of(train, cols).items():
                for fname, f in scorers(train, cols, scale, r_train, keep).items():
                    ap.setdefault((fname, sname), []).append(
                        average_precision_score(test.label.values, f(r_test))
                    )
        for (fname, sname), v in sorted(ap.items()):
            print(f"{name}\t{fname}\t{sname}\tmean AU-PRC {np.mean(v):.3f}\t({len(v)} series)")


def generated(path):
    t = pads.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()
    t["ts"] = pd.to_datetime(t.ts, utc=True)
    cols = [c for c in t.columns if t[c].dtype.kind == "f" and c != "anomaly_id"]
    kinds = ["spike", "burst", "level_shift", "trend", "correlation_break"]
    ap = {}
    for _, g in t.groupby("host_id", observed=True):
        g = g.sort_values("ts").reset_index(drop=True)
        keep = np.array([np.nanstd(g[c].values) > 0 for c in cols])
        cycle = hour_cycle(g, cols)
        r, _ = residuals(g, cols, cycle, None)
        ok = np.all(np.isfinite(r), axis=1)
        kind = g.anomaly_type.astype(str).values
        normal = ~g.is_anomaly.astype(bool).values
        for sname, scale in scales_of(g, cols).items():
            if sname != "floor":
                continue
            for fname, f in scorers(g, cols, scale, r[ok], keep).items():
                s = f(np.where(ok[:, None], r, 0.0))
                for k in kinds:
                    m = ok & ((kind == k) | normal)
                    y = kind[m] == k
                    if y.any():
                        ap.setdefault((fname, k), []).append(average_precision_score(y, s[m]))
    for (fname, k), v in sorted(ap.items()):
        print(f"generated\t{fname}\t{k}\tmean AU-PRC {np.mean(v):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("real")
    here = os.path.dirname(os.path.abspath(__file__))
    r.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data", "real"))
    r.add_argument("sets", nargs="*", default=["jumpstarter_d2", "jumpstarter_d3"])
    g = sub.add_parser("generated")
    g.add_argument("dir")
    a = ap.parse_args()
    if a.what == "real":
        real(a.data, a.sets)
    else:
        generated(a.dir)


if __name__ == "__main__":
    main()
