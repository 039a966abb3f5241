-- Point-wise precision, recall and F1, events and events detected, per region.
-- Tables: scored.
WITH ev AS (
  SELECT anomaly_id, MIN(CAST(region AS VARCHAR)) AS g, MAX(CASE WHEN alert_id IS NOT NULL THEN 1 ELSE 0 END) AS hit
  FROM scored WHERE anomaly_id IS NOT NULL GROUP BY anomaly_id
),
pts AS (
  SELECT CAST(region AS VARCHAR) AS g,
         SUM(CASE WHEN alert_id IS NOT NULL AND is_anomaly THEN 1 ELSE 0 END) AS tp,
         SUM(CASE WHEN alert_id IS NOT NULL AND NOT is_anomaly THEN 1 ELSE 0 END) AS fp,
         SUM(CASE WHEN alert_id IS NULL AND is_anomaly THEN 1 ELSE 0 END) AS fn
  FROM scored GROUP BY CAST(region AS VARCHAR)
)
SELECT pts.g AS region, tp, fp, fn,
       CASE WHEN tp + fp > 0 THEN tp / CAST(tp + fp AS DOUBLE) END AS "precision",
       CASE WHEN tp + fn > 0 THEN tp / CAST(tp + fn AS DOUBLE) END AS recall,
       CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp / CAST(2 * tp + fp + fn AS DOUBLE) END AS f1,
       COALESCE(e.events, 0) AS events, COALESCE(e.detected, 0) AS detected
FROM pts LEFT JOIN (SELECT g, COUNT(*) AS events, SUM(hit) AS detected FROM ev GROUP BY g) e
  ON e.g = pts.g
ORDER BY pts.g
