#!/usr/bin/env python3
"""TADS side by side with DuckDB, Polars, numpy and scikit-learn, on the same generated Parquet.

Run it with benches/compare/run.sh (which builds TADS in release mode and installs the Python
packages in a virtual environment of its own). Every engine computes the same PCA squared
prediction error (SPE) of every row, from the same model.json, on the same files, on this
machine, in one run; the engines alternate within each repetition so that a noisy neighbour hurts
them all alike. Medians are reported, with each engine's rows/s and its ratio to TADS.

Three tasks, each compared like with like:
  score to Parquet: read every row, compute the SPE, write every row with it as Parquet
      tads score (the scores alone, and with the alert pass), DuckDB COPY, Polars sink_parquet, and the floor: DataFusion
      reading and writing the same rows with no scoring at all (with the writer settings of tads score, and with
      DataFusion's default writer).
  SPE in memory: read the 8 metrics, compute the SPE of every row, consume it
      DataFusion with pca_score(), DuckDB SQL arithmetic, a Polars lazy expression, numpy,
      scikit-learn PCA transform + inverse_transform, and the floor: a plain DataFusion scan.
  co-moments for training: pca_fit() over the model's 8 metrics, and the floor: a plain DataFusion
      scan of the same 8 columns.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS_PER_HOST_WEEK = 7 * 8640  # 10 s interval


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Tads:
    def __init__(self, target):
        self.bin = Path(target) / "release" / "tads"
        self.engine = Path(target) / "release" / "examples" / "compare_engine"

    def run(self, *args):
        return sh([str(self.bin), *args])

    def engine_run(self, *args):
        out = sh([str(self.engine), *args]).stdout
        return json.loads(out.strip().splitlines()[-1])


def model_params(model_json):
    m = json.loads(Path(model_json).read_text())
    import numpy as np

    return {
        "features": m["features"],
        "median": np.array(m["median"]),
        "scale": np.array(m["scale"]),
        "mean": np.array(m["pca"]["mean"]),
        "P": np.array(m["pca"]["components"]),  # d x k
        "k": m["pca"]["k"],
    }


def spe_sql(p, source):
    """The SPE as plain SQL arithmetic over `source`."""
    d, k = len(p["features"]), p["k"]
    ys = ",\n  ".join(
        f'(("{f}" - {float(p["median"][j])!r}) / {float(p["scale"][j])!r} - {float(p["mean"][j])!r}) AS y{j}'
        for j, f in enumerate(p["features"])
    )
    ts = ",\n  ".join(
        "(" + " + ".join(f"{float(p['P'][j][c])!r} * y{j}" for j in range(d)) + f") AS t{c}"
        for c in range(k)
    )
    yy = " + ".join(f"y{j} * y{j}" for j in range(d))
    tt = " + ".join(f"t{c} * t{c}" for c in range(k))
    return (
        f"WITH y AS (SELECT *, {ys} FROM {source}),\n"
        f"t AS (SELECT *, {ts} FROM y)\n"
        f"SELECT * EXCLUDE ({', '.join([f'y{j}' for j in range(d)] + [f't{c}' for c in range(k)])}), "
        f"({yy}) - ({tt}) AS spe FROM t"
    )


def spe_polars(p, lf):
    import polars as pl

    d, k = len(p["features"]), p["k"]
    y = [
        ((pl.col(f) - float(p["median"][j])) / float(p["scale"][j]) - float(p["mean"][j]))
        for j, f in enumerate(p["features"])
    ]
    t = [sum(float(p["P"][j][c]) * y[j] for j in range(d)) for c in range(k)]
    spe = sum(yj * yj for yj in y) - sum(tc * tc for tc in t)
    return lf.with_columns(spe.alias("spe"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=10e6, help="rows to generate (default 10M)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each engine (default 3)")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/tads/compare"), help="scratch folder")
    ap.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    ap.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()

    import duckdb
    import numpy as np
    import polars as pl
    import pyarrow.dataset as pads
    import sklearn
    from sklearn.decomposition import PCA

    tads = Tads(args.target)
    work = Path(args.work)
    hosts = max(1, round(args.rows / ROWS_PER_HOST_WEEK))
    data = work / f"telemetry-{hosts}h"
    models = work / "models"
    if not (data / "_manifest.json").exists():
        print(f"generating {hosts} hosts x 7 days into {data}", flush=True)
        tads.run("generate", "--out", str(data), "--hosts", str(hosts), "--duration", "7d", "--overwrite", "--quiet")
    manifest = json.loads((data / "_manifest.json").read_text())
    rows = manifest["rows"]
    tads.run("train", "--data", str(data), "--models", str(models), "--model", "bench", "--overwrite", "--quiet")
    p = model_params(models / "bench" / "model.json")
    feats = p["features"]
    glob = str(data / "**" / "*.parquet")
    out = work / "out"

    def fresh(path):
        shutil.rmtree(path, ignore_errors=True)
        return path

    def tads_score(*extra):
        o = fresh(out / "tads")
        tads.run("score", "--data", str(data), "--models", str(models), "--model", "bench", "--out", str(o), "--quiet", *extra)
        m = json.loads((o / "_manifest.json").read_text())
        return m["rows"]

    def df_copy(mode="copy"):
        o = fresh(out / "datafusion")
        o.mkdir(parents=True)
        return tads.engine_run(mode, str(data), str(o) + "/")["rows"]

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    source = f"read_parquet('{glob}', hive_partitioning = true)"

    def duck_copy():
        o = fresh(out / "duckdb")
        o.mkdir(parents=True)
        con.execute(f"COPY ({spe_sql(p, source)}) TO '{o}/scored.parquet' (FORMAT parquet, COMPRESSION zstd)")
        return con.execute(f"SELECT count(*) FROM '{o}/scored.parquet'").fetchone()[0]

    def polars_copy():
        o = fresh(out / "polars")
        o.mkdir(parents=True)
        spe_polars(p, pl.scan_parquet(glob, hive_partitioning=True)).sink_parquet(o / "scored.parquet", compression="zstd")
        return pl.scan_parquet(o / "scored.parquet").select(pl.len()).collect().item()

    def df_scan():
        return tads.engine_run("scan", str(data))["rows"]

    def df_spe():
        r = tads.engine_run("spe", str(data), str(models), "bench")
        return r["rows"]

    def df_scan_features():
        return tads.engine_run("scan-features", str(data), str(models), "bench")["rows"]

    def df_fit():
        return tads.engine_run("fit", str(data), str(models), "bench")["rows"]

    metrics_only = f"read_parquet('{glob}')"

    def duck_spe():
        sql = spe_sql(p, f"(SELECT {', '.join(feats)} FROM {metrics_only})")
        return con.execute(f"SELECT count(spe) FROM ({sql})").fetchone()[0]

    def polars_spe():
        lf = spe_polars(p, pl.scan_parquet(glob).select(feats))
        return lf.select(pl.col("spe").count()).collect().item()

    def read_matrix():
        table = pads.dataset(str(data), format="parquet", partitioning="hive").to_table(columns=feats)
        return np.column_stack([table.column(f).to_numpy() for f in feats])

    def numpy_spe():
        X = read_matrix()
        Y = (X - p["median"]) / p["scale"] - p["mean"]
        T = Y @ p["P"]
        spe = np.einsum("ij,ij->i", Y, Y) - np.einsum("ij,ij->i", T, T)
        return int(np.isfinite(spe).sum())

    sk = PCA(n_components=p["k"])
    sk.components_ = p["P"].T
    sk.mean_ = p["mean"]
    sk.n_components_ = p["k"]
    sk.explained_variance_ = np.ones(p["k"])
    sk.n_features_in_ = len(feats)

    def sklearn_spe():
        X = read_matrix()
        Z = (X - p["median"]) / p["scale"]
        R = Z - sk.inverse_transform(sk.transform(Z))
        spe = np.einsum("ij,ij->i", R, R)
        return int(np.isfinite(spe).sum())

    tasks = {
        "score to Parquet": [
            ("tads score --no-alerts (5 scores)", lambda: tads_score("--no-alerts")),
            ("tads score with alerts (files in time order, scored once)", tads_score),
            ("tads score with the alert pass, sorted (alerts.walk = sort)",
             lambda: tads_score("--set", "alerts.walk=sort")),
            ("DataFusion COPY with the writer settings of tads score, no scoring (floor)", lambda: df_copy("copy-tads")),
            ("DataFusion COPY with its default writer, no scoring", df_copy),
            ("DuckDB COPY with SPE", duck_copy),
            ("Polars sink_parquet with SPE", polars_copy),
        ],
        "SPE in memory": [
            ("TADS pca_score() in DataFusion", df_spe),
            ("DataFusion plain scan (floor)", df_scan),
            ("DuckDB SQL arithmetic", duck_spe),
            ("Polars lazy expression", polars_spe),
            ("numpy", numpy_spe),
            ("scikit-learn transform+inverse", sklearn_spe),
        ],
        "co-moments for training (pca_fit over Parquet)": [
            ("TADS pca_fit() in DataFusion", df_fit),
            ("DataFusion plain scan of the same 8 columns (floor)", df_scan_features),
            ("DataFusion plain scan of every column", df_scan),
        ],
    }
    # Check once that every engine computes the same SPE on a sample (and warms the caches).
    sample = con.execute(f"SELECT spe FROM ({spe_sql(p, source)}) ORDER BY host_id, ts LIMIT 5").fetchall()
    print("DuckDB SPE of the first rows:", [round(s[0], 6) for s in sample], flush=True)

    times = {name: [] for task in tasks.values() for name, _ in task}
    for rep in range(args.reps):
        for task, engines in tasks.items():
            for name, fn in engines:
                t0 = time.perf_counter()
                n = fn()
                dt = time.perf_counter() - t0
                if n != rows:
                    sys.exit(f"{name}: {n} rows, expected {rows}")
                times[name].append(dt)
                print(f"rep {rep + 1} {name:45s} {dt:7.2f} s  {rows / dt / 1e6:7.2f} M rows/s", flush=True)

    lines = []
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    lines.append("# TADS side by side with DuckDB, Polars, numpy and scikit-learn\n")
    lines.append(f"Produced by `benches/compare/run.sh` on {time.strftime('%Y-%m-%d')}: {rows:,} generated rows "
                 f"({hosts} hosts x 7 days, {len(manifest['files'])} files), model `bench` with d = {len(feats)}, k = {p['k']}; "
                 f"median of {args.reps} alternating repetitions, wall time of the whole task.\n")
    lines.append(f"Machine: {os.cpu_count()} cores ({cpu}), {mem} GiB; Python {platform.python_version()}, "
                 f"duckdb {duckdb.__version__}, polars {pl.__version__}, numpy {np.__version__}, scikit-learn {sklearn.__version__}. "
                 "Shared and noisy: compare ratios within this table, not with other runs.\n")
    for task, engines in tasks.items():
        base = statistics.median(times[engines[0][0]])
        lines.append(f"\n## {task}\n")
        lines.append("| engine | median s | M rows/s | TADS ÷ engine (speed) |")
        lines.append("|---|---:|---:|---:|")
        for name, _ in engines:
            med = statistics.median(times[name])
            lines.append(f"| {name} | {med:.2f} | {rows / med / 1e6:.2f} | {med / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    Path(args.results).write_text(text)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
