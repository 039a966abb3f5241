-- Point-wise precision, recall and F1: a row is predicted anomalous when it is inside an alert
-- (alert_id IS NOT NULL) and is anomalous when it is labelled (is_anomaly).
-- Tables: scored (the scored rows of a `tads score` run).
SELECT tp, fp, fn, tn,
       CASE WHEN tp + fp > 0 THEN tp / CAST(tp + fp AS DOUBLE) END AS "precision",
       CASE WHEN tp + fn > 0 THEN tp / CAST(tp + fn AS DOUBLE) END AS recall,
       CASE WHEN 2 * tp + fp + fn > 0 THEN 2 * tp / CAST(2 * tp + fp + fn AS DOUBLE) END AS f1
FROM (
  SELECT SUM(CASE WHEN alert_id IS NOT NULL AND is_anomaly THEN 1 ELSE 0 END) AS tp,
         SUM(CASE WHEN alert_id IS NOT NULL AND NOT is_anomaly THEN 1 ELSE 0 END) AS fp,
         SUM(CASE WHEN alert_id IS NULL AND is_anomaly THEN 1 ELSE 0 END) AS fn,
         SUM(CASE WHEN alert_id IS NULL AND NOT is_anomaly THEN 1 ELSE 0 END) AS tn
  FROM scored
)
