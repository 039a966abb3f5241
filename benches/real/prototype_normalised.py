#!/usr/bin/env python3
"""Score normalisation over a trailing window, replayed on the real sets: does the fused score
divided by its key's recent quiet level rank the labelled rows better than the score itself?
A measurement, not a detector.

The adaptive threshold (`tads_model::adapt`) raises a key's thresholds each UTC day by the factor
f = max(1, q-quantile of the key's quiet scores over the previous days / enter). Alerting on
score / f against the configured thresholds is the same rule exactly, so f can move into the
score. This replays TADS's alert machine and that factor on the scored test rows of a finished
`benches/real/run.sh` work directory (the defaults: enter 0.8, exit 0.5, min_points 3, instant
2.0, cooldown 30 min, q 0.995 over 3 days, 12 quiet rows on the previous day) and prints, per
set, the mean AU-PRC (the benchmark's rule: per series with labelled rows, NaN lowest) of

  raw          the `score` column as written
  normalised   score / f, with f replayed here (no sketch: exact quantiles)
  and, as a check of the replay, the share of rows whose replayed in-alert flag differs from
  TADS's own `alert_id`;

then, as a second table, other levels for the same normalisation, each day's factor taken over
the rows outside TADS's own alerts (exact quantiles): (quantile, days, f at least 1 or not).

Only past scores enter f, never labels.

    ~/.cache/tads/venv-real/bin/python benches/real/prototype_normalised.py [WORK]

WORK defaults to ~/.cache/tads/real-bench/default.
"""
import glob
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import average_precision_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adaptive_threshold import machine  # noqa: E402

DAY = 86400 * 10**6


def replay(ts, s):
    """(inside, factor): TADS's alert machine with its default adaptive threshold (the instant
    threshold scaled too, quantiles at or above the rank as its sketch takes them)."""
    return machine(ts, s, "outside", 0.995, 3, scale_instant=True, quantile_method="higher")


def ap(y, s):
    s = np.asarray(s, float).copy()
    ok = np.isfinite(s)
    s[~ok] = (s[ok].min() - 1.0) if ok.any() else 0.0
    return float(average_precision_score(y, s))


VARIANTS = [(0.995, 3, True), (0.995, 3, False), (0.5, 3, False), (0.9, 3, False),
            (0.995, 7, True), (0.5, 7, False)]


def variant_factor(ts, s, inside, q, days, at_least_one, enter=0.8, min_rows=12):
    """Each row's factor: its day's q-quantile of the quiet scores of the previous `days` days
    over `enter`, when the previous day has `min_rows` quiet rows (else 1)."""
    day = ts // DAY
    f = np.ones(len(s))
    quiet = ~inside & np.isfinite(s)
    for d in np.unique(day):
        m = quiet & (day >= d - days) & (day < d)
        if (quiet & (day == d - 1)).sum() < min_rows or not m.any():
            continue
        level = np.quantile(s[m], q) / enter
        f[day == d] = max(1.0, level) if at_least_one else max(level, 1e-3)
    return f


def series_rows(work, name):
    """(ts, score, TADS's in-alert flags, labels) of each scored series of set `name`."""
    for d in sorted(glob.glob(os.path.join(work, "data", name, "*", ""))):
        series = os.path.basename(os.path.dirname(d))
        files = sorted(glob.glob(os.path.join(work, "scores", name, series, "scored", "**",
                                              "*.parquet"), recursive=True))
        if not files:
            continue
        t = pa.concat_tables([pq.read_table(f, columns=["ts", "score", "alert_id"])
                              for f in files]).sort_by("ts")
        test = pq.read_table(d + "test.parquet", columns=["ts", "label"]).sort_by("ts")
        if t.num_rows != test.num_rows:
            continue
        ts = t["ts"].cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
        s = t["score"].cast(pa.float64()).to_numpy(zero_copy_only=False)
        y = test["label"].to_numpy(zero_copy_only=False).astype(bool)
        yield ts, s, t["alert_id"].is_valid().to_numpy(zero_copy_only=False), y


def one_set(work, name):
    raw, norm, differ, rows = [], [], 0, 0
    variants = {v: [] for v in VARIANTS}
    for ts, s, tads_inside, y in series_rows(work, name):
        inside, f = replay(ts, s)
        differ += int((inside != tads_inside).sum())
        rows += len(s)
        if y.any():
            raw.append(ap(y, s))
            norm.append(ap(y, s / f))
            for v in VARIANTS:
                variants[v].append(ap(y, s / variant_factor(ts, s, tads_inside, *v)))
    print(f"| {name} | {len(raw)} | {np.mean(raw):.3f} | {np.mean(norm):.3f} | "
          f"{100 * differ / max(rows, 1):.2f} % |", flush=True)
    return {v: float(np.mean(a)) for v, a in variants.items()}


def main():
    work = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
        "~/.cache/tads/real-bench/default")
    print("| set | series | AU-PRC raw | AU-PRC normalised | replay differs |")
    print("|---|---:|---:|---:|---:|")
    others = {name: one_set(work, name) for name in sorted(os.listdir(os.path.join(work, "data")))}
    print("\n| set | " + " | ".join(f"q {q}, {d} d{', f >= 1' if one else ''}"
                                     for q, d, one in VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for name, v in others.items():
        print(f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in VARIANTS) + " |")


if __name__ == "__main__":
    main()
