#!/usr/bin/env python3
"""Alerts held open by a trailing mean of the score: a numpy replay (session 32, issue 20). Not
TADS itself, and it reads the test labels only to count, never to choose.

JumpStarter's labelled stretches are long (d2's average 145 rows, d3's 371) while TADS's alerts
cover about 6 labelled rows each: point recall is what holds point F1 down. The rule replayed
here keeps an alert of a finished `benches/real/run.sh` run open after TADS closed it, row by
row, while the mean of the fused score over the last W rows (the row included) stays at or
above LEVEL (in the score's units, 1.0 = its limit; the alert machine's default `exit` is 0.5
and `enter` 0.8, before the adaptive threshold scales them). Printed per set and (W, LEVEL),
pooled over the series as the benchmark pools them: point precision, recall and F1, event
recall and normal time in alert; W = 0 is the run as it was.

    python3 prototype_hold.py WORK [SET ...] [--windows 6,12,24] [--levels 0.5,0.8,1.0,2.0]
                              [--median]

--median holds on the trailing median of the W rows instead of their mean (session 33): a mean
is carried by the alert's last scores, often tens of times the limit, a median is not.

WORK is the --out directory of benches/real/run.sh. Needs numpy and pyarrow.
"""

import argparse
import glob
import os
import sys

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ts_micros  # noqa: E402
from ceiling import tads_rows, trailing_mean  # noqa: E402

WINDOWS = (0, 6, 12, 24)
LEVELS = (0.5, 0.8, 1.0, 2.0)


def hold(alert, smoothed, level):
    """`alert`, with each alert extended while `smoothed` (the trailing mean or median) stays at
    or above `level`."""
    out = alert.copy()
    for i in range(1, len(out)):
        if out[i - 1] and not out[i] and smoothed[i] >= level:
            out[i] = True
    return out


def events(y):
    """(start, end) of every maximal run of labelled rows."""
    edges = np.flatnonzero(np.diff(np.r_[0, y.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2]))


def trailing_median(x, w):
    """The median of each row and the w - 1 rows before it (fewer at the start); NaN counts as
    -inf."""
    x = np.where(np.isnan(x), -np.inf, x)
    head = [np.median(x[:i + 1]) for i in range(min(w - 1, len(x)))]
    rest = np.median(np.lib.stride_tricks.sliding_window_view(x, w), axis=1) if len(x) >= w else []
    return np.r_[head, rest]


def one_set(work, set_name, windows=WINDOWS, levels=LEVELS, smooth=trailing_mean):
    totals, normal = {}, 0
    for d in sorted(glob.glob(os.path.join(work, "data", set_name, "*", ""))):
        series = os.path.basename(os.path.dirname(d))
        test = pq.read_table(d + "test.parquet")
        rows = tads_rows(work, set_name, series, ts_micros(test))
        if rows is None:
            continue
        score, alert = rows
        y = test["label"].to_numpy(zero_copy_only=False).astype(bool)
        runs = events(y)
        normal += int((~y).sum())
        for w in windows:
            smoothed = smooth(score, w) if w else None
            for level in levels if w else (None,):
                pred = hold(alert, smoothed, level) if w else alert
                t = totals.setdefault((w, level), np.zeros(5))
                t += [(pred & y).sum(), (pred & ~y).sum(), y.sum(), len(runs),
                      sum(pred[a:b].any() for a, b in runs)]
    if not totals:
        print(f"{set_name}: no series with TADS scores in {work}")
        return
    print(f"\n{set_name}")
    print(f"  {'W':>3} {'LEVEL':>5} | {'P':>5} {'R':>5} {'F1':>5} | {'events':>6} {'normal':>7}")
    for key, (tp, fp, lab, n_ev, found) in totals.items():
        w, level = key
        p, r = tp / max(tp + fp, 1), tp / max(lab, 1)
        f = 2 * p * r / (p + r) if p + r else 0.0
        lv = "-" if level is None else f"{level:.1f}"
        print(f"  {w:>3} {lv:>5} | {p:>5.3f} {r:>5.3f} {f:>5.3f} | {found / max(n_ev, 1):>6.2f}"
              f" {100 * fp / max(normal, 1):>6.2f}%")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work")
    ap.add_argument("sets", nargs="*")
    ap.add_argument("--windows", default=",".join(map(str, WINDOWS[1:])),
                    help="trailing windows W in rows, comma-separated (the run as it was is always shown)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="levels, comma-separated")
    ap.add_argument("--median", action="store_true", help="hold on the trailing median, not the mean")
    a = ap.parse_args()
    windows = (0, *(int(w) for w in a.windows.split(",")))
    levels = tuple(float(v) for v in a.levels.split(","))
    for s in a.sets or sorted(os.listdir(os.path.join(a.work, "data"))):
        one_set(a.work, s, windows, levels, trailing_median if a.median else trailing_mean)


if __name__ == "__main__":
    main()
