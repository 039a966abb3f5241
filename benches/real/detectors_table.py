"""One Markdown table per set from several benches/real/run.sh summaries: a row per setting
(NAME=summary.json arguments, in order) and the scikit-learn PCA peer of the first."""
import json
import sys

runs = [(a.split("=", 1)[0], json.load(open(a.split("=", 1)[1]))) for a in sys.argv[1:]]
sets = list(runs[0][1]["sets"])
for st in sets:
    print(f"\n### `{st}`\n")
    print("| detectors | point precision | point recall | point F1 | event recall (events) | Fc1 "
          "| normal time in alert | false alerts per key-day | mean AU-PRC |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(name, s["sets"][st]["tads"]) for name, s in runs]
    rows.append(("scikit-learn PCA peer", runs[0][1]["sets"][st]["sklearn_pca"]))
    for name, t in rows:
        print(f"| {name} | {t['precision']:.3f} | {t['recall']:.3f} | {t['f1']:.3f} "
              f"| {t['event_recall']:.2f} ({t['events_detected']}/{t['events']}) | {t['fc1']:.3f} "
              f"| {100 * t['normal_in_alert_frac']:.1f}% | {t['false_alerts_per_key_day']:.2f} "
              f"| {t['mean_auprc']:.3f} |")
