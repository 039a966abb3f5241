-- False alerts: alerts none of whose rows is labelled, per 100 host-days and per key-day (the
-- distinct (host_id, UTC day) pairs in the scored rows; host_id is the alert key).
-- Tables: scored.
WITH touched AS (
  SELECT alert_id, MAX(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS hit
  FROM scored WHERE alert_id IS NOT NULL GROUP BY alert_id
),
host_days AS (
  SELECT COUNT(*) AS host_days FROM (SELECT DISTINCT host_id, date_trunc('day', ts) FROM scored)
)
SELECT (SELECT COUNT(*) FROM touched) AS alerts,
       (SELECT COUNT(*) FROM touched WHERE hit = 0) AS false_alerts,
       host_days,
       (SELECT COUNT(*) FROM touched WHERE hit = 0) * 100.0 / host_days AS false_alerts_per_100_host_days,
       (SELECT COUNT(*) FROM touched WHERE hit = 0) / CAST(host_days AS DOUBLE) AS false_alerts_per_key_day
FROM host_days
