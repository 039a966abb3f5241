-- A histogram of one metric (cpu_pct here; replace it in the two places below): 20 equal bins
-- over its observed range, with the count and share of rows in each and how many are labelled.
-- Tables: telemetry.
WITH r AS (SELECT min(cpu_pct) AS lo, max(cpu_pct) AS hi FROM telemetry),
b AS (
  SELECT LEAST(19, CAST(floor((t.cpu_pct - r.lo) / NULLIF(r.hi - r.lo, 0) * 20) AS BIGINT)) AS bin,
         r.lo, r.hi, t.is_anomaly
  FROM telemetry t CROSS JOIN r
  WHERE t.cpu_pct IS NOT NULL
)
SELECT bin,
       round(lo + (hi - lo) * bin / 20.0, 2) AS bin_from,
       round(lo + (hi - lo) * (bin + 1) / 20.0, 2) AS bin_to,
       count(*) AS "rows",
       round(count(*) * 100.0 / sum(count(*)) OVER (), 2) AS pct,
       sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomalous_rows
FROM b
GROUP BY bin, lo, hi
ORDER BY bin
