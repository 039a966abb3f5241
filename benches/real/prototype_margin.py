#!/usr/bin/env python3
"""Why the forecast residual stays calibrated on JumpStarter's test period where the MAD and PCA
signals do not (session 21, issue 20): a numpy check, not TADS itself.

Each metric of a row is measured as the scoring plan's drift baseline measures it: less its
series' median of the previous UTC day (the first day of each split has none and is left out).
For every series of a set it prints, pooled over the series:

  spread   per metric, the 99.5 % quantile of |distance| in the test period's unlabelled rows
           over the same in the training rows (median, 75th and 90th percentile of the ratio)
  interval the largest, over the metrics, of the distance in units of the metric's training
           interval (0.5 % and 99.5 % quantiles, each side on its own: the forecast's rule
           without its daily cycle and without its margin), thresholded at its own training 95 %
           quantile: the share of training, unlabelled test and labelled test rows above it,
           and the mean AU-PRC of that score

    python3 prototype_margin.py [--data ../shared/data/real] [SET ...]

Needs numpy, pandas, pyarrow, scikit-learn (benches/real/requirements.txt plus pandas).
"""

import argparse
import glob
import os

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score


def distances(df, metrics):
    """Each metric less its series' median of the previous UTC day (NaN on the first day)."""
    day = pd.to_datetime(df["ts"]).dt.floor("D")
    previous = df.groupby(day)[metrics].median().shift(1)
    return df[metrics].to_numpy(dtype=float) - previous.reindex(day).to_numpy(dtype=float)


def interval_score(r, lo, hi):
    z = np.where(r >= 0, r / hi, -r / lo)
    return np.nanmax(np.nan_to_num(z, nan=0.0), axis=1)


def one_set(path):
    ratios, shares, aps = [], [], []
    for d in sorted(glob.glob(os.path.join(path, "*", ""))):
        train = pd.read_parquet(d + "train.parquet").sort_values("ts")
        test = pd.read_parquet(d + "test.parquet").sort_values("ts")
        metrics = [c for c in train.columns if c not in ("ts", "host_id", "label")]
        r_train, r_test = distances(train, metrics), distances(test, metrics)
        labelled = test["label"].astype(bool).to_numpy()
        for j in range(len(metrics)):
            a = np.abs(r_train[:, j][~np.isnan(r_train[:, j])])
            b = np.abs(r_test[~labelled, j][~np.isnan(r_test[~labelled, j])])
            if len(a) and len(b) and np.quantile(a, 0.995) > 0:
                ratios.append(np.quantile(b, 0.995) / np.quantile(a, 0.995))
        lo = -np.nanquantile(r_train, 0.005, axis=0)
        hi = np.nanquantile(r_train, 0.995, axis=0)
        ok = (lo > 0) & (hi > 0)
        lo, hi = np.where(ok, lo, np.inf), np.where(ok, hi, np.inf)
        s_train, s_test = interval_score(r_train, lo, hi), interval_score(r_test, lo, hi)
        threshold = np.quantile(s_train, 0.95)
        shares.append((
            (s_train >= threshold).mean(),
            (s_test[~labelled] >= threshold).mean(),
            (s_test[labelled] >= threshold).mean() if labelled.any() else np.nan,
        ))
        if labelled.any():
            aps.append(average_precision_score(labelled, s_test))
    r, s = np.array(ratios), np.array(shares)
    print(f"{os.path.basename(path)}: spread ratio over {len(r)} series x metrics: median "
          f"{np.median(r):.2f}, p75 {np.percentile(r, 75):.2f}, p90 {np.percentile(r, 90):.2f}")
    print(f"  interval score >= its training 95 % quantile: training {np.nanmean(s[:, 0]):.3f}, "
          f"unlabelled test {np.nanmean(s[:, 1]):.3f}, labelled test {np.nanmean(s[:, 2]):.3f}; "
          f"mean AU-PRC {np.mean(aps):.3f}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data", "real"))
    p.add_argument("sets", nargs="*", default=["jumpstarter_d2", "jumpstarter_d3"])
    a = p.parse_args()
    for s in a.sets:
        one_set(os.path.join(a.data, s))


if __name__ == "__main__":
    main()
