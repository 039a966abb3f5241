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
                              [--median | --bridge]

--median holds on the trailing median of the W rows instead of their mean (session 33): a mean
is carried by the alert's last scores, often tens of times the limit, a median is not.

--bridge replays the rule built in session 34 (`alerts.hold_rows`), without its scaling by the
adaptive threshold: hold while more than half of the last W scores are at or above LEVEL (the
lower middle of an even window), and keep the held rows only where an alert of the run follows
them before the hold ends (it bridges dips; it adds nothing after an alert's last row).

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


def bridge(alert, ok):
    """`alert`, with each stretch of rows after an alert where `ok` holds added only when an alert
    row ends it."""
    out, i, n = alert.copy(), 1, len(alert)
    while i < n:
        if out[i - 1] and not out[i] and ok[i]:
            j = i
            while j < n and not alert[j] and ok[j]:
                j += 1
            if j < n and alert[j]:
                out[i:j] = True
            i = j
        else:
            i += 1
    return out


def mostly_at_or_above(x, w, level):
    """Whether more than half of each row's last w scores (NaN left out) are at or above level."""
    hit = np.where(np.isnan(x), 0, x >= level).astype(np.int64)
    seen = (~np.isnan(x)).astype(np.int64)
    c_hit, c_seen = np.r_[0, np.cumsum(hit)], np.r_[0, np.cumsum(seen)]
    lo = np.maximum(np.arange(len(x)) + 1 - w, 0)
    top = np.arange(1, len(x) + 1)
    return 2 * (c_hit[top] - c_hit[lo]) > (c_seen[top] - c_seen[lo])


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


def one_set(work, set_name, windows=WINDOWS, levels=LEVELS, smooth=trailing_mean, bridged=False):
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
            smoothed = smooth(score, w) if w and not bridged else None
            for level in levels if w else (None,):
                if not w:
                    pred = alert
                elif bridged:
                    pred = bridge(alert, mostly_at_or_above(score, w, level))
                else:
                    pred = hold(alert, smoothed, level)
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
    ap.add_argument("--bridge", action="store_true",
                    help="the built rule: more than half of W at or above LEVEL, held rows kept only when bridged")
    a = ap.parse_args()
    windows = (0, *(int(w) for w in a.windows.split(",")))
    levels = tuple(float(v) for v in a.levels.split(","))
    for s in a.sets or sorted(os.listdir(os.path.join(a.work, "data"))):
        one_set(a.work, s, windows, levels, trailing_median if a.median else trailing_mean, a.bridge)


if __name__ == "__main__":
    main()
