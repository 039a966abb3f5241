#!/usr/bin/env python3
"""Which models should measure themselves in the scoring space? A selector from training rows.

`tads train --scoring-space` lifts JumpStarter's AU-PRC and point F1 but breaks the generated
targets, so it cannot be kept everywhere. This replays a per-model choice without rebuilding
anything: a model takes its scoring-space section only where the SPE's tail over its training
rows as scoring measures them (`scoring_space.tail.spe`, the 0.99 quantile) lies more than K
times above the tail over the raw rows (`thresholds.tail.spe`, 0.95; session 28's ratio) or,
with `--like`, above the raw rows' own 0.99 quantile (`thresholds.spe_empirical_99`; the ratio
`tads train` now applies by default with K = 10) — a model whose components describe another
space than the one it scores in. The ratio comes from the training rows alone. The replay
leaves out `tads train`'s other condition, 7 days after the first, which every JumpStarter
service meets (19).

    TADS_TRAIN_ARGS=--no-scoring-space benches/real/run.sh --label base --report none --out BASE \
        --sets jumpstarter_d2,jumpstarter_d3
    TADS_TRAIN_ARGS=--scoring-space benches/real/run.sh --label ss --report none --out SPACE \\
        --sets jumpstarter_d2,jumpstarter_d3
    ~/.cache/tads/venv-real/bin/python benches/real/prototype_select.py BASE SPACE [--k 0 10 20 ...]
    ~/.cache/tads/venv-real/bin/python benches/real/prototype_select.py --group MODELS/NAME/group.json   # ratios only

Each series' metrics are those of one of the two runs (the scores of a series depend on its
own model only), pooled as `benches/real/bench.py` pools them: point precision and F1, event
recall and normal time in alert over all rows, AU-PRC averaged over series. With K = 0 and
K = inf it gives back the two runs' own rows.
"""
import argparse
import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import POOLED, pool  # noqa: E402


def spe_ratio(model, like):
    """The SPE's 0.99 quantile in the scoring space over its tail over the raw rows: the 0.95
    quantile (`thresholds.tail.spe`), or with `like` the raw rows' own 0.99 quantile
    (`thresholds.spe_empirical_99`, what `tads train` selects by)."""
    space = model.get("scoring_space")
    thresholds = model.get("thresholds", {})
    raw = thresholds.get("spe_empirical_99") if like else (thresholds.get("tail") or {}).get("spe")
    if not space or not raw or not space["tail"].get("spe"):
        return None
    return space["tail"]["spe"] / raw


def pooled(rows):
    """`bench.pool` over rows read back from `per_series.csv`."""
    c = pool([dict(r, auprc=float(r["auprc"]) if r["auprc"] else None,
                   **{k: float(r[k]) for k in POOLED}) for r in rows])
    return (f"P {c['precision']:.3f}  F1 {c['f1']:.3f}  event recall {c['event_recall']:.2f}  "
            f"normal in alert {100 * c['normal_in_alert_frac']:.1f} %  AU-PRC {c['mean_auprc']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", nargs="?", help="work directory of a run with the defaults")
    ap.add_argument("space", nargs="?", help="work directory of a run trained --scoring-space")
    ap.add_argument("--k", type=float, nargs="+", default=[0, 5, 10, 12, 15, 20, float("inf")])
    ap.add_argument("--group", help="a group.json trained --scoring-space: print its members' ratios")
    ap.add_argument("--like", action="store_true", help="divide by the raw rows' 0.99 quantile of the SPE")
    args = ap.parse_args()
    if args.group:
        members = json.loads(Path(args.group).read_text())["members"]
        items = members.values() if isinstance(members, dict) else members
        ratios = sorted(r for r in (spe_ratio(m.get("model", m), args.like) for m in items) if r is not None)
        print(f"{len(ratios)} members: " + " ".join(f"{r:.2f}" for r in ratios))
        return
    load = lambda d: {(r["set"], r["series"], r["method"]): r for r in csv.DictReader(open(Path(d) / "per_series.csv"))}
    base, space = load(args.base), load(args.space)
    ratio = {}
    for f in (Path(args.space) / "models").glob("*/model.json"):
        s, series = f.parent.name.split("__", 1)
        ratio[(s, series)] = spe_ratio(json.loads(f.read_text()), args.like) or 0.0
    for s in sorted({k[0] for k in base}):
        series = sorted({k[1] for k in base if k[0] == s and k[2] == "tads"})
        ratios = sorted(ratio.get((s, x), 0.0) for x in series)
        print(f"{s}: SPE ratios, median {ratios[len(ratios) // 2]:.2f}, min {ratios[0]:.2f}, max {ratios[-1]:.2f}")
        if all((s, x, "sklearn_pca") in base for x in series):
            print(f"  scikit-learn PCA           {pooled([base[(s, x, 'sklearn_pca')] for x in series])}")
        for k in args.k:
            chosen = [x for x in series if ratio.get((s, x), 0.0) >= k]
            rows = [(space if x in chosen else base)[(s, x, "tads")] for x in series]
            print(f"  K = {k:<5g} ({len(chosen):2d} of {len(series)})  {pooled(rows)}")


if __name__ == "__main__":
    main()
