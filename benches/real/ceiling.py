#!/usr/bin/env python3
"""How much point F1 a row score can buy inside the normal-time budget: a diagnostic of issue 20's
JumpStarter targets, not part of the benchmark's tables. It reads the test labels to choose its
thresholds (an oracle), so its figures are ceilings, never results.

For each set of a finished `benches/real/run.sh` work directory, and for each score:

  tads       the fused score of the run's TADS settings (1.0 = its limit)
  pca_peer   the scikit-learn PCA peer's squared reconstruction error
  mad_peer   the median/MAD max peer's score
  the peers' scores divided by their own training 99.5 % quantile, so that one threshold means
  the same on every series. NaN counts as the lowest score.

it prints, pooled over the series as the benchmark pools them:

  as run     point F1 and normal time in alert of the method as the benchmark ran it (TADS:
             rows inside an alert; the peers: score above the training 99.5 % quantile)
  oracle     the best point F1 of one threshold on the score, over every threshold that keeps
             normal time in alert within the budget (--budget, default 3 %), with its precision
             and recall: what any rule that alerts row by row on this score could reach
  everything point F1 of alerting on every row (precision = the labelled share)

With --smooth W[,W...] it also prints the oracle of each score's trailing mean over the last W
rows of its series (the row itself included; NaN counts as the series' lowest finite score):
what a rule that alerts on a smoothed score, and so stays in alert through a stretch of high
rows, could reach at best.

    python3 ceiling.py WORK [--budget 0.03] [--smooth 12,48] [SET ...]

WORK is the --out directory of benches/real/run.sh (default ~/.cache/tads/real-bench/<label>).
Needs numpy, pyarrow, scikit-learn (benches/real/requirements.txt).
"""

import argparse
import glob
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import matrix, metric_names, peer_mad_max, peer_sklearn_pca, ts_micros  # noqa: E402


def f1(p, r):
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def oracle(scores, labels, budget):
    """(F1, precision, recall) of the best single threshold with normal time in alert <= budget."""
    s, y = np.concatenate(scores), np.concatenate(labels)
    s = np.where(np.isfinite(s), s, -np.inf)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Only cut between distinct scores: rows of one score are all in alert or none.
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    ok = fp <= budget * (~y).sum()
    if not ok.any():
        return 0.0, 0.0, 0.0
    p, r = tp / np.maximum(tp + fp, 1), tp / max(y.sum(), 1)
    f = np.where(ok, 2 * p * r / np.maximum(p + r, 1e-12), -1.0)
    i = int(np.argmax(f))
    return float(f[i]), float(p[i]), float(r[i])


def trailing_mean(x, w):
    """The mean of each row and the w - 1 rows before it (fewer at the start); NaN and -inf
    count as the lowest finite value of x."""
    finite = np.isfinite(x)
    low = float(x[finite].min()) if finite.any() else 0.0
    x = np.where(finite | (x == np.inf), x, low)
    x = np.where(x == np.inf, np.finfo(float).max / (2 * w), x)
    c = np.r_[0.0, np.cumsum(x)]
    i = np.arange(len(x))
    start = np.maximum(0, i - w + 1)
    return (c[i + 1] - c[start]) / (i + 1 - start)


def as_run(preds, labels):
    p, y = np.concatenate(preds), np.concatenate(labels)
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    prec, rec = tp / max(tp + fp, 1), tp / max(int(y.sum()), 1)
    return f1(prec, rec), fp / max(int((~y).sum()), 1)


def tads_rows(work, set_name, series, test_ts):
    files = sorted(glob.glob(os.path.join(work, "scores", set_name, series, "scored", "**",
                                          "*.parquet"), recursive=True))
    if not files:
        return None
    t = pa.concat_tables([pq.read_table(f, columns=["ts", "score", "alert_id"]) for f in files])
    t = t.sort_by("ts")
    if t.num_rows != len(test_ts) or not np.array_equal(ts_micros(t), test_ts):
        return None
    score = t["score"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    return score, t["alert_id"].is_valid().to_numpy(zero_copy_only=False)


def one_set(work, set_name, budget, smooth):
    methods = {m: ([], [], []) for m in ("tads", "pca_peer", "mad_peer")}  # scores, preds, labels
    skipped = []
    for d in sorted(glob.glob(os.path.join(work, "data", set_name, "*", ""))):
        series = os.path.basename(os.path.dirname(d))
        train, test = pq.read_table(d + "train.parquet"), pq.read_table(d + "test.parquet")
        y = test["label"].to_numpy(zero_copy_only=False).astype(bool)
        tads = tads_rows(work, set_name, series, ts_micros(test))
        if tads is None:
            skipped.append(series)
            continue
        methods["tads"][0].append(tads[0])
        methods["tads"][1].append(tads[1])
        methods["tads"][2].append(y)
        metrics = metric_names(test)
        x_train, x_test = matrix(train, metrics), matrix(test, metrics)
        for name, fn in (("pca_peer", peer_sklearn_pca), ("mad_peer", peer_mad_max)):
            s_train, s_test, _ = fn(x_train, x_test)
            thr = float(np.quantile(s_train, 0.995))
            methods[name][0].append(s_test / thr if thr > 0 else s_test)
            methods[name][1].append(s_test > thr)
            methods[name][2].append(y)
    if not methods["tads"][2]:
        print(f"{set_name}: no series with TADS scores in {work}")
        return
    labels = methods["tads"][2]
    share = float(np.concatenate(labels).mean())
    print(f"\n{set_name}: {len(labels)} series, {100 * share:.1f} % of test rows labelled"
          + (f" (skipped, no scores: {', '.join(skipped)})" if skipped else ""))
    print(f"  alerting on every row: point F1 {f1(share, 1.0):.3f}")
    print(f"  {'score':<9} {'as run: F1':>10} {'normal':>7} | oracle at <= {100 * budget:.0f} % normal:"
          f" {'F1':>5} {'P':>5} {'R':>5}")
    for name, (scores, preds, ys) in methods.items():
        f_run, normal = as_run(preds, ys)
        f_o, p_o, r_o = oracle(scores, ys, budget)
        print(f"  {name:<9} {f_run:>10.3f} {100 * normal:>6.1f}% | {'':>27}{f_o:>5.3f} {p_o:>5.3f} {r_o:>5.3f}")
        for w in smooth:
            f_o, p_o, r_o = oracle([trailing_mean(s, w) for s in scores], ys, budget)
            label = f"  mean{w}"
            print(f"  {label:<9} {'':>10} {'':>7} | {'':>27}{f_o:>5.3f} {p_o:>5.3f} {r_o:>5.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work")
    ap.add_argument("sets", nargs="*")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--smooth", default="", help="trailing-mean windows in rows, e.g. 12,48")
    a = ap.parse_args()
    smooth = [int(w) for w in a.smooth.split(",") if w.strip()]
    if any(w < 1 for w in smooth):
        ap.error("--smooth: every window must be at least 1 row")
    sets = a.sets or sorted(os.listdir(os.path.join(a.work, "data")))
    for s in sets:
        one_set(a.work, s, a.budget, smooth)


if __name__ == "__main__":
    main()
