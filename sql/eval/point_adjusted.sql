-- Point-adjusted precision, recall and F1: as point-wise, but every row of a labelled event
-- counts as predicted once any of its rows is inside an alert. It flatters a detector (one hit
-- credits the whole event); report it beside the point-wise numbers, never alone.
-- Tables: scored.
WITH events AS (
  SELECT anomaly_id, MAX(CASE WHEN alert_id IS NOT NULL THEN 1 ELSE 0 END) AS hit
  FROM scored WHERE anomaly_id IS NOT NULL GROUP BY anomaly_id
),
rows AS (
  SELECT s.is_anomaly AS actual,
         (s.alert_id IS NOT NULL OR (s.is_anomaly AND COALESCE(e.hit, 0) = 1)) AS predicted
  FROM scored s LEFT JOIN events e ON s.anomaly_id = e.anomaly_id
)
SELECT tp, fp, fn, tn,
       CASE WHEN tp + fp > 0 THEN tp / CAST(tp + fp AS DOUBLE) END AS "precision",
       CASE WHEN tp + fn > 0 THEN tp / CAST(tp + fn AS DOUBLE) END AS recall,
       CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp / CAST(2 * tp + fp + fn AS DOUBLE) END AS f1
FROM (
  SELECT SUM(CASE WHEN predicted AND actual THEN 1 ELSE 0 END) AS tp,
         SUM(CASE WHEN predicted AND NOT actual THEN 1 ELSE 0 END) AS fp,
         SUM(CASE WHEN NOT predicted AND actual THEN 1 ELSE 0 END) AS fn,
         SUM(CASE WHEN NOT predicted AND NOT actual THEN 1 ELSE 0 END) AS tn
  FROM rows
)
