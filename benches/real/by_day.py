"""Where a run's normal time in alert lies, by test day: for each set of a `benches/real/run.sh`
work directory, the unlabelled rows per day since each series' first test row, how many of them
lie inside an alert, and the length of the alerts that touch no labelled row.

    ~/.cache/tads/venv-real/bin/python benches/real/by_day.py ~/.cache/tads/real-bench/default \
        jumpstarter_d2,jumpstarter_d3,nab

Uses the scored files and the split test files the run left; labels only to tell normal rows
from labelled ones, as the benchmark's own evaluator does.
"""
import collections
import glob
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_US = 86_400_000_000


def main(work, sets):
    for set_name in sets:
        per_day = collections.defaultdict(lambda: [0, 0])  # day -> [normal rows, in alert]
        lengths = []
        for sdir in sorted(glob.glob(os.path.join(work, "scores", set_name, "*"))):
            series = os.path.basename(sdir)
            files = sorted(glob.glob(os.path.join(sdir, "scored", "**", "*.parquet"), recursive=True))
            if not files:
                continue
            t = pa.concat_tables([pq.read_table(f, columns=["ts", "alert_id"]) for f in files]).sort_by("ts")
            test = pq.read_table(os.path.join(work, "data", set_name, series, "test.parquet"),
                                 columns=["ts", "label"]).sort_by("ts")
            label = test["label"].to_numpy(zero_copy_only=False).astype(bool)
            ts = t["ts"].cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
            ids = t["alert_id"].to_pylist()
            inside = np.array([a is not None for a in ids])
            day = (ts - ts[0]) // DAY_US
            for d in np.unique(day):
                normal = (day == d) & ~label
                per_day[int(d)][0] += int(normal.sum())
                per_day[int(d)][1] += int((normal & inside).sum())
            rows_of = collections.defaultdict(list)
            for i, a in enumerate(ids):
                if a is not None:
                    rows_of[a].append(i)
            lengths += [len(r) for r in rows_of.values() if not label[r].any()]
        total = sum(v[0] for v in per_day.values())
        alerted = sum(v[1] for v in per_day.values())
        print(f"== {set_name}: {100 * alerted / max(total, 1):.1f} % of normal rows in alert")
        for d in sorted(per_day):
            n, a = per_day[d]
            print(f"  day {d:2d}: {n:6d} normal rows, {a:5d} in alert ({100 * a / max(n, 1):5.1f} %), "
                  f"{100 * a / max(alerted, 1):3.0f} % of all normal rows in alert")
        if lengths:
            x = np.array(lengths)
            print(f"  alerts touching no labelled row: {len(x)}, rows median {np.median(x):.0f}, "
                  f"p90 {np.percentile(x, 90):.0f}, max {x.max()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2].split(","))
