#!/usr/bin/env python3
"""Which day level the drift baseline should take: a numpy check (session 27, issue 20). Not
TADS itself.

Scoring measures each row from the previous UTC day's level. Today that level is the day's
median of the rows. A long anomaly (a level shift of hours) moves that median by a good part of
a scale, and the whole next day is then measured from a displaced level. The alternative here:
the median over the day's hours of each hour's median less the model's cycle at that hour (the
hours' medians lie close together on a normal day, so a few displaced hours hardly move their
median).

For each series (train / test as `prototype_scales.py` reads them) and each level, the rows are
measured as scoring measures them (previous day's level, the hour-of-day cycle out, over the
tail-floored scale); the signal is the largest |z|, thresholded at its own 99.5 % quantile over
the training rows after the first day. Printed per set: mean AU-PRC, the share of normal test
rows above the threshold, event recall (an event: a run of labelled rows; found when any row is
above), point F1.

    python3 prototype_level.py real [SET ...]
    python3 prototype_level.py generated TRAIN_DIR TEST_DIR   # e.g. --anomaly-rate 0.1 / 1

Needs numpy, pandas, pyarrow, scikit-learn.
"""

import os
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from sklearn.metrics import average_precision_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prototype_scales as P  # noqa: E402


def levels(df, cols, cycle, how):
    """Per UTC day, each metric's level."""
    day = df.ts.dt.floor("D")
    if how == "rows":
        return df.groupby(day)[cols].median()
    hour = df.ts.dt.floor("h")
    hourly = df.groupby(hour)[cols].median()
    hourly = hourly - cycle[hourly.index.hour]
    return hourly.groupby(hourly.index.floor("D")).median()


def residuals(df, cols, cycle, how, prev_last):
    return P.residuals(df, cols, cycle, prev_last, levels(df, cols, cycle, how))


def signal(r, scale, keep):
    z = r / scale
    z = np.where(np.isfinite(z), z, 0.0)[:, keep]
    return np.abs(z).max(1)


def events(label):
    """Start/end indices of runs of labelled rows."""
    y = np.r_[0, label.astype(int), 0]
    d = np.diff(y)
    return list(zip(np.where(d == 1)[0], np.where(d == -1)[0]))


def measure(train, test, cols, how, y, out):
    keep = np.array([np.nanstd(train[c].values) > 0 for c in cols])
    if not keep.any() or y.sum() == 0:
        return
    cycle = P.hour_cycle(train, cols)
    scale = P.scales_of(train, cols)["floor"]
    r_tr, lv = residuals(train, cols, cycle, how, None)
    first = (train.ts.dt.floor("D") == train.ts.dt.floor("D").iloc[0]).values
    if (~first).sum() > 50:
        r_tr = r_tr[~first]
    r_te, _ = residuals(test, cols, cycle, how, lv.iloc[-1].values)
    s_tr, s_te = signal(r_tr, scale, keep), signal(r_te, scale, keep)
    hot = s_te > np.quantile(s_tr, 0.995)
    out.setdefault("ap", []).append(average_precision_score(y, s_te))
    out.setdefault("normal", []).append((hot[y == 0].sum(), (y == 0).sum()))
    ev = events(y)
    out.setdefault("events", []).append((sum(hot[a:b].any() for a, b in ev), len(ev)))
    out.setdefault("tp", []).append(((hot & (y == 1)).sum(), hot.sum(), y.sum()))


def report(name, how, out):
    n = np.array(out["normal"]).sum(0)
    e = np.array(out["events"]).sum(0)
    tp, pred, pos = np.array(out["tp"]).sum(0)
    p, r = tp / max(pred, 1), tp / max(pos, 1)
    f1 = 2 * p * r / max(p + r, 1e-12)
    print(f"{name}\t{how}\tAU-PRC {np.mean(out['ap']):.3f}\tnormal above {n[0] / n[1]:.2%}"
          f"\tevent recall {e[0] / e[1]:.2f}\tpoint F1 {f1:.3f}")


def real(sets):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "real")
    for name in sets:
        for how in ("rows", "hours"):
            out = {}
            for train, test in P.real_series(root, name):
                cols = [c for c in train.columns if c.startswith("m") or c == "value"]
                measure(train, test, cols, how, test.label.values.astype(int), out)
            report(name, how, out)


def generated(train_dir, test_dir):
    read = lambda p: pads.dataset(p, format="parquet", partitioning="hive").to_table().to_pandas()  # noqa: E731
    tr, te = read(train_dir), read(test_dir)
    for t in (tr, te):
        t["ts"] = pd.to_datetime(t.ts, utc=True)
        t["host_id"] = t.host_id.astype(str)
    cols = ["cpu_pct", "mem_pct", "disk_read_mbps", "disk_write_mbps", "net_rx_mbps",
            "net_tx_mbps", "latency_ms", "error_rate"]
    for how in ("rows", "hours"):
        out = {}
        for h, a in tr.groupby("host_id"):
            b = te[te.host_id == h].sort_values("ts").reset_index(drop=True)
            a = a.sort_values("ts").reset_index(drop=True)
            # Train and test are the same days here (the quality test's protocol): test on the
            # whole period, measured from its own previous days.
            measure(a, b, cols, how, b.is_anomaly.values.astype(int), out)
        report("generated", how, out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "real":
        real(sys.argv[2:] or ["jumpstarter_d2", "jumpstarter_d3", "nab", "ms_cloud_monitoring"])
    else:
        generated(sys.argv[2], sys.argv[3])
