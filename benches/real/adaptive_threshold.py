"""What an adaptive alert threshold would do on the real sets: a measurement, not a detector.

Reads the scored test rows that `benches/real/run.sh` left in its work directory
(`<out>/scores/<set>/<series>/scored/test.parquet`: the fused `score`, `label`, `alert_id`) and
replays TADS's alert machine (enter 0.8, exit 0.5, min_points 3, instant 2.0, cooldown 30 min; it
reproduces the benchmark's own numbers, row `base`) with a per-key, per-day enter threshold:
max(0.8, the q-quantile of the key's own scores on the previous UTC day, when that day has 12 rows
or more), exit scaled alike. The threshold uses past scores only, never labels.

    ~/.cache/tads/venv-real/bin/python benches/real/adaptive_threshold.py [WORKDIR]

WORKDIR defaults to ~/.cache/tads/real-bench/default.
"""
import os
import glob, sys
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
def machine(ts, s, enter, exit_, minp=3, instant=2.0, cool_us=30*60*10**6):
    n=len(s); inal=np.zeros(n,bool); openi=False; pend=None; cool=None; start=None
    for i in range(n):
        x=s[i]
        if np.isnan(x):
            if openi: inal[i]=True
            continue
        if openi:
            if x < exit_[i]:
                openi=False; cool=ts[i]+cool_us; continue
            inal[i]=True; continue
        cooling = cool is not None and ts[i] < cool
        above = (not cooling) and x >= enter[i]
        if not above: pend=None; continue
        f,c = pend if pend else (i,0)
        c+=1
        if c>=minp or x>=instant:
            inal[f:i+1]=True; openi=True; pend=None
        else: pend=(f,c)
    return inal
def run(setname, mode, q=0.99):
    normal=nia=0; ev=evd=0; TP=FP=FN=0
    for f in sorted(glob.glob(f'scores/{setname}/*/scored/test.parquet')):
        t=pq.read_table(f, columns=['ts','score','label','alert_id'])
        ts=np.array(t['ts'].cast(pa.int64()).to_pylist())
        if t.schema.field('ts').type.unit=='ns': ts=ts//1000
        elif t.schema.field('ts').type.unit=='ms': ts=ts*1000
        elif t.schema.field('ts').type.unit=='s': ts=ts*10**6
        s=np.array([np.nan if v is None else v for v in t['score'].to_pylist()],float)
        lab=np.array([bool(v) for v in t['label'].to_pylist()])
        enter=np.full(len(s),0.8); exit_=np.full(len(s),0.5)
        if mode!='base':
            day=ts//(86400*10**6)
            for d in np.unique(day):
                prev=(day==d-1)
                if prev.sum()>=12:
                    lv=np.nanquantile(s[prev], q)
                    m=day==d
                    e=max(0.8, lv); enter[m]=e; exit_[m]=0.5*e/0.8
        pred = machine(ts,s,enter,exit_)
        normal+=(~lab).sum(); nia+=(pred&~lab).sum()
        # events
        i=0
        while i<len(lab):
            if lab[i]:
                j=i
                while j<len(lab) and lab[j]: j+=1
                ev+=1; evd+= pred[i:j].any(); i=j
            else: i+=1
        TP+=(pred&lab).sum(); FP+=(pred&~lab).sum(); FN+=(~pred&lab).sum()
    P=TP/max(1,TP+FP); R=TP/max(1,TP+FN); F=2*P*R/max(1e-9,P+R)
    return nia/normal, evd/ev, F
os.chdir(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser('~/.cache/tads/real-bench/default'))
for s in ['jumpstarter_d2','jumpstarter_d3','nab','ms_cloud_monitoring']:
    out=[f"{s}"]
    for mode,q in [('base',0),('dyn',0.99),('dyn',0.995),('dyn',0.999)]:
        try:
            a,b,c=run(s,mode,q); out.append(f"{mode}{q}: nia {a:.3f} evR {b:.2f} F1 {c:.3f}")
        except Exception as e: out.append(f"{mode}{q}: {e}")
    print(" | ".join(out))
