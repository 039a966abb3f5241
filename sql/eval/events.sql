-- Event-level recall per anomaly type: an event (anomaly_id) is detected when any of its rows
-- is inside an alert. Time to detect: from the event's first row to the moment the first alert
-- touching it was raised (alerts.opened_ts, when its min_points-th row arrived), 0 when that
-- alert was already open. Also the point-wise recall of each type's rows.
-- Tables: scored, alerts.
WITH ev AS (
  SELECT anomaly_id, MIN(CAST(anomaly_type AS VARCHAR)) AS anomaly_type, MIN(ts) AS start_ts,
         COUNT(*) AS points, COUNT(alert_id) AS points_hit
  FROM scored WHERE anomaly_id IS NOT NULL GROUP BY anomaly_id
),
firsts AS (
  -- The first alert that touches each event.
  SELECT s.anomaly_id, a.opened_ts,
         ROW_NUMBER() OVER (PARTITION BY s.anomaly_id ORDER BY a.opened_ts) AS n
  FROM (SELECT DISTINCT anomaly_id, alert_id FROM scored
        WHERE anomaly_id IS NOT NULL AND alert_id IS NOT NULL) s
  JOIN alerts a ON a.alert_id = s.alert_id
),
detected AS (
  SELECT ev.anomaly_type, ev.points, ev.points_hit, f.opened_ts IS NOT NULL AS hit,
         CASE WHEN f.opened_ts IS NOT NULL THEN
           GREATEST(0.0, (CAST(f.opened_ts AS BIGINT) - CAST(ev.start_ts AS BIGINT)) / 1e6)
         END AS ttd_s
  FROM ev LEFT JOIN firsts f ON f.anomaly_id = ev.anomaly_id AND f.n = 1
)
SELECT anomaly_type,
       COUNT(*) AS events,
       SUM(CASE WHEN hit THEN 1 ELSE 0 END) AS detected,
       SUM(CASE WHEN hit THEN 1 ELSE 0 END) / CAST(COUNT(*) AS DOUBLE) AS recall,
       median(ttd_s) AS ttd_median_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ttd_s) AS ttd_p90_s,
       SUM(points_hit) / CAST(SUM(points) AS DOUBLE) AS point_recall
FROM detected
GROUP BY anomaly_type
ORDER BY anomaly_type
