#!/usr/bin/env python3
"""TADS on real, labelled telemetry, beside two simple peers, with one evaluator for all.

Run it through `benches/real/run.sh` (which prepares the Python environment); `run.sh --help`
describes the options. For every set and series of the real data (../shared/data/real):

1. Split: build `train.parquet` and `test.parquet` in the work dir.
   - jumpstarter_*: the source's own train / test files, as they are;
   - nab: train = the rows with `is_train` (NAB's probationary period), test = the rest;
   - ms_cloud_monitoring (and any set without a split): train = the first 30% of the rows,
     test = the rest.
   `is_train` is dropped from both, `label` from train: `tads train` takes every numeric column
   that is not `is_anomaly`/`anomaly_type`/`anomaly_id` as a feature, so a `label` column in the
   training file would become a metric. The test file keeps `label` (scoring uses only the
   model's features and copies every other column).
2. TADS: `tads train` on the train file, `tads score` on the test file, with $TADS_TRAIN_ARGS
   and $TADS_SCORE_ARGS appended. A row is predicted anomalous when `alert_id IS NOT NULL`; its
   score is the fused `score` (NULL -> lowest). A failing call marks the series as failed (first
   line of its stderr), and the run goes on.
3. Peers on exactly the same rows, thresholds from the training rows only:
   - scikit-learn PCA: StandardScaler fitted on train (a constant column gets scale 1),
     PCA(n_components=0.95, svd_solver='full'), score = squared reconstruction error; with a
     single metric, |z| of the standardized value. NaN inputs become z = 0 (the training mean).
   - median/MAD max: per metric z = |x - median| / max(1.4826 MAD, 1e-9) from train, metrics
     constant over train left out, score = the largest z over the metrics (NaN -> no
     contribution).
   Both predict `score > threshold`, threshold = the 99.5% quantile of the score over the
   training rows: point-wise, no alert state machine, no point adjustment.
4. Evaluate every method with the same code (see `evaluate`), pool per set and method, and
   write the report (benches/REAL.md), WORK/per_series.csv and WORK/summary.json.
"""
import argparse
import csv
import datetime
import glob
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sklearn
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

# The sets in the order the report shows them; any other set found in --data follows.
SET_ORDER = ["jumpstarter_d2", "jumpstarter_d3", "nab", "ms_cloud_monitoring"]
NOT_METRICS = {"ts", "host_id", "label", "is_train"}
TRAIN_QUANTILE = 0.995      # the peers' threshold: this quantile of their training scores
LEADING_TRAIN_FRACTION = 0.30  # a series without a split trains on its first 30% of rows
PCA_VARIANCE = 0.95
MAD_SCALE_FLOOR = 1e-9
# With TADS_REAL_PEERS=iforest,kmeans,lof,ocsvm, more peers (for the detectors of issue 18).
METHODS = ["tads", "sklearn_pca", "mad_max"] + [
    n for n in os.environ.get("TADS_REAL_PEERS", "").split(",") if n
]
METHOD_TITLES = {
    "sklearn_pca": "scikit-learn PCA (95% var.), train 99.5% quantile",
    "mad_max": "median/MAD max, train 99.5% quantile",
    "iforest": "scikit-learn Isolation Forest (100 trees), train 99.5% quantile",
    "kmeans": "k-means distance (k = 8), train 99.5% quantile",
    "lof": "scikit-learn LOF (20 neighbours), train 99.5% quantile",
    "ocsvm": "scikit-learn one-class SVM (nu 0.05, RBF, 1,000 rows), train 99.5% quantile",
}


def natural_key(s):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


# --------------------------------------------------------------------------------------------
# Data: one train and one test table per series
# --------------------------------------------------------------------------------------------

def list_series(data_dir, sets_filter, series_filter):
    """[(set, series, series_dir)] in report order."""
    found = sorted(
        (d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d))),
        key=lambda s: (SET_ORDER.index(s) if s in SET_ORDER else len(SET_ORDER), s),
    )
    if sets_filter:
        missing = [s for s in sets_filter if s not in found]
        if missing:
            sys.exit(f"bench: no set {', '.join(missing)} in {data_dir} (found: {', '.join(found)})")
        found = [s for s in found if s in sets_filter]
    out = []
    for s in found:
        for series in sorted(os.listdir(os.path.join(data_dir, s)), key=natural_key):
            d = os.path.join(data_dir, s, series)
            if not os.path.isdir(d):
                continue
            if series_filter and series not in series_filter:
                continue
            out.append((s, series, d))
    if not out:
        sys.exit("bench: no series selected (check --sets / --series)")
    unknown = sorted(set(series_filter or []) - {series for _, series, _ in out})
    if unknown:
        print(f"bench: warning: no series {', '.join(unknown)} in the selected sets", file=sys.stderr)
    return out


def split_series(series_dir):
    """(train, test, how): the two Arrow tables and a description of the split."""
    if os.path.exists(os.path.join(series_dir, "train.parquet")):
        train = pq.read_table(os.path.join(series_dir, "train.parquet"))
        test = pq.read_table(os.path.join(series_dir, "test.parquet"))
        how = "source split"
    else:
        t = pq.read_table(os.path.join(series_dir, "data.parquet"))
        if "is_train" in t.column_names:
            m = t["is_train"]
            train, test = t.filter(m), t.filter(pc.invert(m))
            how = "is_train"
        else:
            n_train = int(math.floor(t.num_rows * LEADING_TRAIN_FRACTION))
            train, test = t.slice(0, n_train), t.slice(n_train)
            how = f"first {LEADING_TRAIN_FRACTION:.0%}"
    for name in ("is_train",):
        if name in train.column_names:
            train = train.drop_columns([name])
        if name in test.column_names:
            test = test.drop_columns([name])
    if "label" in train.column_names:
        train = train.drop_columns(["label"])
    # No pandas metadata in the files we write (it describes the source's frame, not these).
    train = train.replace_schema_metadata(None)
    test = test.replace_schema_metadata(None)
    return train, test, how


def metric_names(table):
    return [
        f.name for f in table.schema
        if f.name not in NOT_METRICS and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    ]


def matrix(table, metrics):
    """The metrics as an n x d float64 array, NULL -> NaN."""
    cols = [table[m].cast(pa.float64()).to_numpy(zero_copy_only=False) for m in metrics]
    return np.column_stack(cols).astype(np.float64) if cols else np.zeros((table.num_rows, 0))


def ts_micros(table):
    return table["ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


# --------------------------------------------------------------------------------------------
# TADS
# --------------------------------------------------------------------------------------------

def first_line(text):
    """The message of a failed call: its first line that starts with 'error', else its first line."""
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    for line in lines:
        if line.lower().startswith("error"):
            return line
    return lines[0] if lines else "(no message)"


def run_tads(tads, work, set_name, series, train_path, test_path, test_ts, train_args, score_args,
             timeout):
    """{'ok': bool, 'error', 'score', 'alert_id', 'seconds'}; scored rows aligned with the test rows."""
    model = f"{set_name}__{series}"
    models = os.path.join(work, "models")
    out = os.path.join(work, "scores", set_name, series)
    logs = os.path.join(work, "logs", set_name)
    os.makedirs(logs, exist_ok=True)
    calls = [
        ("train", [tads, "train", "--data", train_path, "--model", model, "--models", models,
                   "--overwrite", *train_args]),
        ("score", [tads, "score", "--data", test_path, "--model", model, "--models", models,
                   "--out", out, "--overwrite", "--quiet", *score_args]),
    ]
    t0 = time.monotonic()
    for step, cmd in calls:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"{step}: timed out after {timeout} s",
                    "seconds": time.monotonic() - t0}
        with open(os.path.join(logs, f"{series}.{step}.log"), "w") as f:
            f.write("$ " + shlex.join(cmd) + "\n" + r.stdout + r.stderr + f"\nexit {r.returncode}\n")
        if r.returncode != 0:
            return {"ok": False, "error": f"{step} (exit {r.returncode}): {first_line(r.stderr or r.stdout)}",
                    "seconds": time.monotonic() - t0}
    seconds = time.monotonic() - t0
    files = sorted(glob.glob(os.path.join(out, "scored", "**", "*.parquet"), recursive=True))
    if not files:
        return {"ok": False, "error": "score: no scored files written", "seconds": seconds}
    t = pa.concat_tables([pq.read_table(f, columns=["ts", "score", "alert_id"]) for f in files])
    t = t.sort_by("ts")
    if t.num_rows != len(test_ts) or not np.array_equal(ts_micros(t), test_ts):
        return {"ok": False, "seconds": seconds,
                "error": f"score: {t.num_rows} scored rows do not match the {len(test_ts)} test rows"}
    score = t["score"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    alert_id = t["alert_id"].cast(pa.string()).to_numpy(zero_copy_only=False)
    return {"ok": True, "error": "", "score": score, "alert_id": alert_id, "seconds": seconds}


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------

def peer_sklearn_pca(x_train, x_test):
    """(train scores, test scores, note)."""
    scaler = StandardScaler().fit(x_train)  # NaN ignored in fit; zero variance -> scale 1
    z_train = np.nan_to_num(scaler.transform(x_train), nan=0.0, posinf=0.0, neginf=0.0)
    z_test = np.nan_to_num(scaler.transform(x_test), nan=0.0, posinf=0.0, neginf=0.0)
    if x_train.shape[1] < 2:
        return np.abs(z_train[:, 0]), np.abs(z_test[:, 0]), "univariate: |z|"
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit(z_train)

    def spe(z):
        return ((z - pca.inverse_transform(pca.transform(z))) ** 2).sum(axis=1)

    return spe(z_train), spe(z_test), f"k={pca.n_components_}/{x_train.shape[1]}"


def _standardized(x_train, x_test):
    scaler = StandardScaler().fit(x_train)
    clean = lambda z: np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)  # noqa: E731
    return clean(scaler.transform(x_train)), clean(scaler.transform(x_test))


def peer_iforest(x_train, x_test):
    """Isolation Forest (100 trees, seeded) on the standardized metrics; score = −score_samples."""
    from sklearn.ensemble import IsolationForest
    z_train, z_test = _standardized(x_train, x_test)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(z_train)
    return -forest.score_samples(z_train), -forest.score_samples(z_test), "100 trees"


def peer_kmeans(x_train, x_test):
    """k-means (k = 8, seeded) on the standardized metrics; score = distance to the nearest centroid."""
    from sklearn.cluster import KMeans
    z_train, z_test = _standardized(x_train, x_test)
    k = min(8, len(z_train))
    km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(z_train)
    return km.transform(z_train).min(axis=1), km.transform(z_test).min(axis=1), f"k={k}"


def peer_lof(x_train, x_test):
    """Local Outlier Factor (20 neighbours, novelty) on the standardized metrics."""
    from sklearn.neighbors import LocalOutlierFactor
    z_train, z_test = _standardized(x_train, x_test)
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(z_train)
    return -lof.score_samples(z_train), -lof.score_samples(z_test), "20 neighbours"


def peer_ocsvm(x_train, x_test):
    """One-class SVM (nu 0.05, RBF with gamma 'scale') fitted on the first 1,000 standardized
    training rows, as `tads train --ocsvm` bounds its kernel matrix; score = −decision_function."""
    from sklearn.svm import OneClassSVM
    z_train, z_test = _standardized(x_train, x_test)
    svm = OneClassSVM(nu=0.05, kernel="rbf", gamma="scale").fit(z_train[:1000])
    return -svm.decision_function(z_train), -svm.decision_function(z_test), "nu 0.05"


# More peers for the detectors of issue 18: TADS_REAL_PEERS=iforest,kmeans,lof,ocsvm.
EXTRA_PEERS = {"iforest": peer_iforest, "kmeans": peer_kmeans, "lof": peer_lof, "ocsvm": peer_ocsvm}
for _name in METHODS[3:]:
    if _name not in EXTRA_PEERS:
        sys.exit(f"TADS_REAL_PEERS: unknown peer `{_name}` (known: {', '.join(EXTRA_PEERS)})")


def peer_mad_max(x_train, x_test):
    with np.errstate(all="ignore"):
        finite = np.isfinite(x_train)
        med = np.nanmedian(np.where(finite, x_train, np.nan), axis=0)
        mad = np.nanmedian(np.abs(x_train - med), axis=0)
        lo = np.nanmin(np.where(finite, x_train, np.nan), axis=0)
        hi = np.nanmax(np.where(finite, x_train, np.nan), axis=0)
    constant = ~(hi > lo)  # also all-NaN columns
    keep = ~constant
    scale = np.maximum(1.4826 * np.nan_to_num(mad[keep]), MAD_SCALE_FLOOR)

    def score(x):
        if not keep.any():
            return np.zeros(len(x))
        z = np.abs(x[:, keep] - med[keep]) / scale
        z = np.where(np.isfinite(z), z, 0.0)
        return z.max(axis=1)

    note = f"{int(keep.sum())}/{len(keep)} metrics, {int((mad[keep] == 0).sum())} with MAD 0"
    return score(x_train), score(x_test), note


def threshold_rule(train_scores, test_scores):
    thr = float(np.quantile(train_scores, TRAIN_QUANTILE))
    return test_scores > thr, thr


# --------------------------------------------------------------------------------------------
# The evaluator: one definition for every method
# --------------------------------------------------------------------------------------------

def runs(mask):
    """Maximal runs of True: (starts, ends), ends exclusive."""
    m = np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]])
    d = np.diff(m)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def evaluate(label, pred, score, days, alert_id=None):
    """Per-series counts. Rows are in time order.

    - tp/fp/fn/tn point-wise, no point adjustment;
    - an event is a maximal run of label == 1 rows; it is detected if any of its rows is predicted;
    - normal rows in alert: predicted rows among label == 0 rows;
    - an alert is, for TADS, one distinct alert_id; for the peers, a maximal run of predicted rows;
      it is false when none of its rows is labelled;
    - AU-PRC: average precision of the score (NaN -> below every other score); none without
      labelled rows.
    """
    y = np.asarray(label).astype(bool)
    p = np.asarray(pred).astype(bool)
    tp = int((p & y).sum())
    fp = int((p & ~y).sum())
    fn = int((~p & y).sum())
    tn = int((~p & ~y).sum())
    cum_p = np.concatenate([[0], np.cumsum(p)])
    cum_y = np.concatenate([[0], np.cumsum(y)])
    ev_s, ev_e = runs(y)
    detected = int(((cum_p[ev_e] - cum_p[ev_s]) > 0).sum())
    if alert_id is None:
        al_s, al_e = runs(p)
        alerts = len(al_s)
        false_alerts = int(((cum_y[al_e] - cum_y[al_s]) == 0).sum())
    else:
        ids = alert_id[p]
        if len(ids):
            _, inv = np.unique(ids.astype(str), return_inverse=True)
            touched = np.bincount(inv, weights=y[p].astype(float))
            alerts = len(touched)
            false_alerts = int((touched == 0).sum())
        else:
            alerts = false_alerts = 0
    auprc = None
    if y.any():
        s = np.asarray(score, dtype=np.float64).copy()
        ok = np.isfinite(s)
        low = (s[ok].min() - 1.0) if ok.any() else 0.0
        s[~ok] = low
        auprc = float(average_precision_score(y, s))
    return dict(rows=len(y), labelled=int(y.sum()), tp=tp, fp=fp, fn=fn, tn=tn,
                events=len(ev_s), events_detected=detected, normal=int((~y).sum()),
                normal_in_alert=fp, alerts=alerts, false_alerts=false_alerts, days=days,
                auprc=auprc)


def ratio(a, b):
    return a / b if b else None


def f_score(p, r):
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return 2 * p * r / (p + r)


def derived(c):
    """Precision, recall, F1, event recall, Fc1, normal time in alert, false alerts per key-day."""
    p = ratio(c["tp"], c["tp"] + c["fp"])
    if p is None and c["tp"] + c["fn"] > 0:
        p = 0.0  # nothing predicted: no precision to speak of, counted as 0
    r = ratio(c["tp"], c["tp"] + c["fn"])
    ev = ratio(c["events_detected"], c["events"])
    return dict(precision=p, recall=r, f1=f_score(p, r), event_recall=ev, fc1=f_score(p, ev),
                normal_in_alert_frac=ratio(c["normal_in_alert"], c["normal"]),
                false_alerts_per_key_day=ratio(c["false_alerts"], c["days"]))


POOLED = ["rows", "labelled", "tp", "fp", "fn", "tn", "events", "events_detected", "normal",
          "normal_in_alert", "alerts", "false_alerts", "days"]


def pool(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    c = {k: sum(r[k] for r in ok) for k in POOLED}
    aps = [r["auprc"] for r in ok if r["auprc"] is not None]
    c.update(derived(c))
    c.update(series_ok=len(ok), series_failed=len(rows) - len(ok),
             mean_auprc=(float(np.mean(aps)) if aps else None), auprc_series=len(aps))
    return c


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def fmt(v, digits=3, pct=False):
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:.{digits}f}"


def table(set_name, by_method, tads_title):
    lines = [
        "| method | series ok / failed | point precision | point recall | point F1 | event recall"
        " (events) | Fc1 | normal time in alert | false alerts per key-day | mean AU-PRC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        c = by_method[m]
        title = tads_title if m == "tads" else METHOD_TITLES[m]
        ev = f"{fmt(c['event_recall'], 2)} ({c['events_detected']}/{c['events']})"
        lines.append(
            f"| {title} | {c['series_ok']} / {c['series_failed']} | {fmt(c['precision'])} | "
            f"{fmt(c['recall'])} | {fmt(c['f1'])} | {ev} | {fmt(c['fc1'])} | "
            f"{fmt(c['normal_in_alert_frac'], pct=True)} | {fmt(c['false_alerts_per_key_day'], 2)} | "
            f"{fmt(c['mean_auprc'])} |")
    return "\n".join(lines)


def git(repo, *args):
    try:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()
    except Exception:
        return ""


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sets", default="")
    ap.add_argument("--series", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tads", required=True)
    ap.add_argument("--report", required=True, help="Markdown report to write; 'none' for no report")
    ap.add_argument("--label", default="")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per tads call")
    ap.add_argument("--command", default="", help="the command line, for the report")
    a = ap.parse_args()

    train_args = shlex.split(os.environ.get("TADS_TRAIN_ARGS", ""))
    score_args = shlex.split(os.environ.get("TADS_SCORE_ARGS", ""))
    sets_filter = [s for s in a.sets.split(",") if s]
    series_filter = [s for s in a.series.split(",") if s]
    work = os.path.abspath(a.out)
    os.makedirs(work, exist_ok=True)
    tads_title = "tads" + (f" ({a.label})" if a.label else
                           (" (defaults)" if not train_args and not score_args else ""))

    selected = list_series(a.data, sets_filter, series_filter)
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    per_series = []  # one dict per series and method
    failures = []
    print(f"bench: {len(selected)} series from {a.data} into {work}", flush=True)
    print(f"bench: tads {a.tads}; TADS_TRAIN_ARGS={shlex.join(train_args) or '(none)'}; "
          f"TADS_SCORE_ARGS={shlex.join(score_args) or '(none)'}", flush=True)
    for i, (set_name, series, series_dir) in enumerate(selected, 1):
        t0 = time.monotonic()
        train, test, how = split_series(series_dir)
        metrics = metric_names(test)
        ddir = os.path.join(work, "data", set_name, series)
        os.makedirs(ddir, exist_ok=True)
        train_path, test_path = os.path.join(ddir, "train.parquet"), os.path.join(ddir, "test.parquet")
        pq.write_table(train, train_path)
        pq.write_table(test, test_path)

        test_ts = ts_micros(test)
        label = test["label"].to_numpy(zero_copy_only=False).astype(np.int8)
        steps = np.diff(test_ts)
        step = float(np.median(steps)) if len(steps) else 0.0
        days = (float(test_ts[-1] - test_ts[0]) + step) / 86_400e6 if len(test_ts) else 0.0
        x_train, x_test = matrix(train, metrics), matrix(test, metrics)
        base = dict(set=set_name, series=series, split=how, train_rows=train.num_rows,
                    metrics=len(metrics))

        # TADS
        res = run_tads(a.tads, work, set_name, series, train_path, test_path, test_ts,
                       train_args, score_args, a.timeout)
        if res["ok"]:
            pred = np.array([v is not None for v in res["alert_id"]], dtype=bool)
            ev = evaluate(label, pred, res["score"], days, alert_id=res["alert_id"])
            per_series.append(dict(base, method="tads", status="ok", error="", note="",
                                   seconds=round(res["seconds"], 2), **ev))
        else:
            # What the failure leaves out, and what the training data looked like.
            with np.errstate(all="ignore"):
                lo, hi = np.nanmin(x_train), np.nanmax(x_train)
            n_events = len(runs(label.astype(bool))[0])
            context = (f"{test.num_rows} test rows, {int(label.sum())} labelled in {n_events} events; "
                       f"training values in [{lo:.6g}, {hi:.6g}]")
            failures.append((set_name, series, res["error"], context))
            per_series.append(dict(base, method="tads", status="failed", error=res["error"],
                                   note="", seconds=round(res["seconds"], 2)))

        # Peers
        extra = [(n, EXTRA_PEERS[n]) for n in METHODS[3:]]
        for name, fn in [("sklearn_pca", peer_sklearn_pca), ("mad_max", peer_mad_max)] + extra:
            p0 = time.monotonic()
            s_train, s_test, note = fn(x_train, x_test)
            pred, thr = threshold_rule(s_train, s_test)
            ev = evaluate(label, pred, s_test, days)
            per_series.append(dict(base, method=name, status="ok", error="",
                                   note=f"{note}; threshold {thr:.4g}",
                                   seconds=round(time.monotonic() - p0, 3), **ev))

        # Progress: one line per series
        parts = []
        for r in per_series[-3:]:
            if r["status"] != "ok":
                parts.append(f"{r['method']} FAILED ({r['error'][:100]})")
                continue
            d = derived(r)
            parts.append(f"{r['method']} P {fmt(d['precision'], 2)} ev {r['events_detected']}/{r['events']}"
                         f" alert {fmt(d['normal_in_alert_frac'], pct=True)} AP {fmt(r['auprc'], 2)}")
        print(f"[{i:3d}/{len(selected)}] {set_name}/{series} ({test.num_rows} test rows, "
              f"{int(label.sum())} labelled, {len(metrics)} metrics) {time.monotonic() - t0:.1f} s | "
              + " | ".join(parts), flush=True)

    elapsed = time.monotonic() - started

    # Per-series CSV
    fields = ["set", "series", "method", "status", "error", "split", "train_rows", "metrics",
              "rows", "labelled", "tp", "fp", "fn", "tn", "events", "events_detected", "normal",
              "normal_in_alert", "alerts", "false_alerts", "days", "auprc", "precision", "recall",
              "f1", "event_recall", "fc1", "normal_in_alert_frac", "false_alerts_per_key_day",
              "note", "seconds"]
    with open(os.path.join(work, "per_series.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in per_series:
            row = dict(r)
            if r["status"] == "ok":
                row.update(derived(r))
            w.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in fields})

    # Pooled summary
    set_names = list(dict.fromkeys(r["set"] for r in per_series))
    summary = {s: {m: pool([r for r in per_series if r["set"] == s and r["method"] == m])
                   for m in METHODS} for s in set_names}
    commit = git(a.repo, "rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git(a.repo, "status", "--porcelain", "--untracked-files=no"))
    meta = dict(label=a.label, tads_title=tads_title, command=a.command,
                date=started_at.isoformat(timespec="seconds"), commit=commit, dirty=dirty,
                tads=a.tads, tads_train_args=train_args, tads_score_args=score_args,
                data=os.path.abspath(a.data), seconds=round(elapsed, 1),
                sklearn=sklearn.__version__, numpy=np.__version__, pyarrow=pa.__version__)
    with open(os.path.join(work, "summary.json"), "w") as f:
        json.dump({"meta": meta, "sets": summary,
                   "failures": [dict(set=s, series=n, error=e, context=c)
                                for s, n, e, c in failures]}, f, indent=1)

    # Markdown
    tables = []
    for s in set_names:
        tables.append(f"### `{s}`\n\n{table(s, summary[s], tads_title)}\n")
    home = os.path.expanduser("~")

    def tilde(path):
        return "~" + path[len(home):] if home and path.startswith(home + os.sep) else path

    tbin = tilde(a.tads)
    md = [
        "# TADS on real, labelled telemetry",
        "",
        "Produced by `benches/real/run.sh` (`benches/real/bench.py`); the data and how to measure "
        "honestly are described in `../shared/data/real/README.md`.",
        "",
        f"- **Command:** `{a.command or 'benches/real/run.sh'}`",
        f"- **Date:** {started_at.strftime('%Y-%m-%d %H:%M UTC')}; {len(selected)} series in "
        f"{elapsed:.0f} s",
        f"- **TADS:** commit `{commit}`{' (with uncommitted changes)' if dirty else ''}, binary "
        f"`{tbin}`",
        f"- **TADS arguments:** `tads train --data train.parquet --model <set>__<series> --overwrite"
        f"{' ' + shlex.join(train_args) if train_args else ''}`, `tads score --data test.parquet "
        f"--overwrite --quiet{' ' + shlex.join(score_args) if score_args else ''}` "
        f"(TADS_TRAIN_ARGS={shlex.join(train_args) or 'none'}, "
        f"TADS_SCORE_ARGS={shlex.join(score_args) or 'none'}); predicted = inside an alert "
        "(`alert_id IS NOT NULL`), AU-PRC from the fused `score` (NULL lowest).",
        "- **Splits:** jumpstarter: the source's train and test files; nab: train = NAB's "
        "probationary period (`is_train`), test = the rest; ms_cloud_monitoring: train = the first "
        "30% of each series, test = the rest. Labels are dropped from the training files, which "
        "may hold anomalies.",
        "- **Peers, on the same rows:** scikit-learn PCA: StandardScaler fitted on train, "
        "PCA(n_components=0.95, svd_solver='full'), score = squared reconstruction error (one "
        "metric: |z|), NaN → z = 0; median/MAD max: z = |x − median| / max(1.4826·MAD, 1e-9) per "
        "metric from train (metrics constant over train left out), score = max over the metrics. "
        "Both alert point by point when the score is above the 99.5% quantile of their own "
        f"training scores (scikit-learn {sklearn.__version__}).",
        "- **Honesty:** every threshold comes from the training rows only; nothing is tuned on "
        "the test labels; no point adjustment.",
        "- **Definitions** (one evaluator for every method): point precision, recall and F1 from "
        "counts pooled over the set's series; an event is a maximal run of labelled rows, "
        "detected when any of its rows is predicted (event recall pooled over events); "
        "Fc1 = 2·P·Rev/(P+Rev) with point precision P and event recall Rev; normal time in alert "
        "= predicted unlabelled rows / unlabelled rows (pooled); false alerts per key-day = "
        "alerts (TADS: distinct `alert_id`; peers: maximal runs of predicted rows) touching no "
        "labelled row, divided by the days of test data (pooled); mean AU-PRC = mean over the "
        "series with labelled rows of the average precision of the score. Failed TADS series "
        "are left out of the TADS row (counted in its first column) and listed below.",
        "",
        "## Results",
        "",
        *tables,
        "## Failures",
        "",
    ]
    if failures:
        md += [f"- `{s}/{n}`: {e} ({c})" for s, n, e, c in failures]
    else:
        md.append("None.")
    md += ["", f"Per-series numbers: `per_series.csv` and `summary.json` in the work directory "
           f"(`{tilde(work)}` for this run).", ""]
    text = "\n".join(md)
    if a.report != "none":
        os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
        with open(a.report, "w") as f:
            f.write(text)

    print()
    for s in set_names:
        print(f"## {s}\n{table(s, summary[s], tads_title)}\n")
    if failures:
        print(f"{len(failures)} TADS failures:")
        for s, n, e, c in failures:
            print(f"  {s}/{n}: {e} ({c})")
    print(f"bench: {len(selected)} series in {elapsed:.0f} s; "
          f"{os.path.join(work, 'per_series.csv')}, {os.path.join(work, 'summary.json')}"
          + (f", {a.report}" if a.report != "none" else ""))


if __name__ == "__main__":
    main()
