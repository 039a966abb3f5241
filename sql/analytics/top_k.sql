-- Top 5 regions, projects, hosts and anomaly types by labelled anomalous rows, with their
-- share of all rows of that group and the events they hold. One result, a `dimension` column
-- says which grouping a row belongs to.
-- Tables: telemetry.
WITH g AS (
  SELECT 'region' AS dimension, CAST(region AS VARCHAR) AS value, is_anomaly, anomaly_id FROM telemetry
  UNION ALL
  SELECT 'project', CAST(project_id AS VARCHAR), is_anomaly, anomaly_id FROM telemetry
  UNION ALL
  SELECT 'host', CAST(host_id AS VARCHAR), is_anomaly, anomaly_id FROM telemetry
  UNION ALL
  SELECT 'anomaly_type', CAST(anomaly_type AS VARCHAR), is_anomaly, anomaly_id FROM telemetry
  WHERE anomaly_type IS NOT NULL
),
counts AS (
  SELECT dimension, value, count(*) AS "rows",
         sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomalous_rows,
         count(DISTINCT anomaly_id) AS events
  FROM g GROUP BY dimension, value
)
SELECT dimension, "rank", value, anomalous_rows, events,
       round(anomalous_rows * 100.0 / "rows", 2) AS anomalous_pct
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY dimension ORDER BY anomalous_rows DESC, value) AS "rank"
  FROM counts
)
WHERE "rank" <= 5
ORDER BY dimension, "rank"
