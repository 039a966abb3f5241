"""Variants of the adaptive alert threshold, replayed on the real sets: how `alerts.adaptive` was
chosen. A measurement, not a detector (TADS's own is `tads_model::adapt`).

Reads the scored test rows of a benchmark run made with the fixed threshold
(`TADS_SCORE_ARGS='--set alerts.adaptive=false' benches/real/run.sh --label fixed --report none`;
`<workdir>/scores/<set>/<series>/scored/test.parquet`: the fused `score` and `label`) and replays
TADS's alert machine (enter 0.8, exit 0.5, min_points 3, instant 2.0, cooldown 30 min; row
`fixed` reproduces the benchmark's own numbers) with a per-key, per-UTC-day enter threshold:
max(0.8, the q-quantile of the key's scores over the previous `days` days), used when the
previous day has 12 counted rows or more, exit scaled alike. Which scores count:

  all      every score (the first prototype: an anomaly that lasts days raises the threshold
           inside itself)
  outside  the scores of rows outside alerts (the rows of a run that could have opened one count
           once it breaks): what TADS does, exactly, here without its sketch

Only past scores enter a threshold, never labels.

    ~/.cache/tads/venv-real/bin/python benches/real/adaptive_threshold.py [WORKDIR]

WORKDIR defaults to ~/.cache/tads/real-bench/fixed.
"""
import glob
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY = 86400 * 10**6


def machine(ts, s, mode, q, days, min_rows=12, enter0=0.8, exit0=0.5, minp=3, instant=2.0,
            cool_us=30 * 60 * 10**6, scale_instant=False, quantile_method="linear"):
    """(inside, factor): rows inside alerts, with the threshold of `mode` (`fixed`, `all` or
    `outside`), and each row's threshold factor (enter / enter0, at least 1). `scale_instant`
    raises the instant threshold by the same factor (TADS's rule since session 18)."""
    n = len(s)
    inside = np.zeros(n, bool)
    factor = np.ones(n)
    is_open, pend, cool, cur, level = False, None, None, None, None
    counted, held = {}, []
    day = ts // DAY
    for i in range(n):
        d = day[i]
        if d != cur:
            cur = d
            vals = [v for k in range(1, days + 1) for v in counted.get(d - k, [])]
            level = (np.quantile(vals, q, method=quantile_method)
                     if mode != 'fixed' and len(counted.get(d - 1, [])) >= min_rows else None)
            counted = {k: v for k, v in counted.items() if k >= d - days}
        enter = enter0 if level is None else max(enter0, level)
        factor[i] = enter / enter0
        exit_ = exit0 * factor[i]
        instant_ = instant * factor[i] if scale_instant else instant
        x = s[i]
        if np.isnan(x):
            if is_open:
                inside[i] = True
            continue
        if is_open:
            if x < exit_:
                is_open, cool = False, ts[i] + cool_us
            else:
                inside[i] = True
        else:
            cooling = cool is not None and ts[i] < cool
            if cooling or x < enter:
                pend = None
            else:
                f, c = pend if pend else (i, 0)
                c += 1
                if c >= minp or x >= instant_:
                    inside[f:i + 1] = True
                    is_open, pend = True, None
                else:
                    pend = (f, c)
        if mode == 'all':
            counted.setdefault(d, []).append(x)
        elif inside[i]:
            held = []
        elif pend is not None:
            held.append(x)
        else:
            counted.setdefault(d, []).extend(held + [x])
            held = []
    return inside, factor


def run(setname, mode, q, days):
    normal = in_alert = events = found = tp = fp = fn = 0
    for f in sorted(glob.glob(f'scores/{setname}/*/scored/test.parquet')):
        t = pq.read_table(f, columns=['ts', 'score', 'label'])
        ts = np.array(t['ts'].cast(pa.int64()).to_pylist())
        ts = {'ns': ts // 1000, 'us': ts, 'ms': ts * 1000, 's': ts * 10**6}[t.schema.field('ts').type.unit]
        s = np.array([np.nan if v is None else v for v in t['score'].to_pylist()], float)
        lab = np.array([bool(v) for v in t['label'].to_pylist()])
        o = np.argsort(ts, kind='stable')
        ts, s, lab = ts[o], s[o], lab[o]
        pred, _ = machine(ts, s, mode, q, days)
        normal += (~lab).sum()
        in_alert += (pred & ~lab).sum()
        i = 0
        while i < len(lab):
            if lab[i]:
                j = i
                while j < len(lab) and lab[j]:
                    j += 1
                events += 1
                found += pred[i:j].any()
                i = j
            else:
                i += 1
        tp += (pred & lab).sum()
        fp += (pred & ~lab).sum()
        fn += (~pred & lab).sum()
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return in_alert / normal, found / events, 2 * p * r / max(1e-9, p + r)


def main():
    os.chdir(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser('~/.cache/tads/real-bench/fixed'))
    print('| set | rule | q | days | normal in alert | event recall | point F1 |')
    print('|---|---|---:|---:|---:|---:|---:|')
    for name in ['jumpstarter_d2', 'jumpstarter_d3', 'nab', 'ms_cloud_monitoring']:
        for mode, q, days in [('fixed', 0, 1), ('all', 0.99, 1), ('all', 0.995, 3),
                              ('outside', 0.99, 1), ('outside', 0.995, 1), ('outside', 0.995, 3),
                              ('outside', 0.999, 3), ('outside', 0.995, 7)]:
            a, b, c = run(name, mode, q, days)
            print(f'| {name} | {mode} | {q} | {days} | {a * 100:.1f} % | {b:.2f} | {c:.3f} |', flush=True)


if __name__ == '__main__':
    main()
