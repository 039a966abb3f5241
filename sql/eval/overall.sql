-- Over all events and rows: events (anomaly_id), events detected (any row inside an alert) and
-- event recall; the normal (unlabelled) rows, those inside an alert, and their share
-- (normal_in_alert: the fraction of normal time in alert); and the composite Fc1 (Garg et al.,
-- IEEE TNNLS 2022), the harmonic mean of the point-wise precision and the event recall.
-- Tables: scored.
WITH ev AS (
  SELECT anomaly_id, MAX(CASE WHEN alert_id IS NOT NULL THEN 1 ELSE 0 END) AS hit
  FROM scored WHERE anomaly_id IS NOT NULL GROUP BY anomaly_id
),
e AS (SELECT COUNT(*) AS events, COALESCE(SUM(hit), 0) AS detected FROM ev),
r AS (
  SELECT COALESCE(SUM(CASE WHEN NOT is_anomaly THEN 1 ELSE 0 END), 0) AS normal_rows,
         COALESCE(SUM(CASE WHEN NOT is_anomaly AND alert_id IS NOT NULL THEN 1 ELSE 0 END), 0)
           AS normal_rows_in_alert,
         COALESCE(SUM(CASE WHEN is_anomaly AND alert_id IS NOT NULL THEN 1 ELSE 0 END), 0) AS tp
  FROM scored
),
x AS (
  SELECT events, detected, normal_rows, normal_rows_in_alert,
         CASE WHEN events > 0 THEN detected / CAST(events AS DOUBLE) END AS event_recall,
         CASE WHEN normal_rows > 0 THEN normal_rows_in_alert / CAST(normal_rows AS DOUBLE) END
           AS normal_in_alert,
         CASE WHEN tp + normal_rows_in_alert > 0 THEN tp / CAST(tp + normal_rows_in_alert AS DOUBLE) END
           AS point_precision
  FROM e CROSS JOIN r
)
SELECT events, detected, event_recall, normal_rows, normal_rows_in_alert, normal_in_alert,
       CASE WHEN point_precision + event_recall > 0
         THEN 2 * point_precision * event_recall / (point_precision + event_recall) END AS fc1
FROM x
