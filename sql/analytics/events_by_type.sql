-- Labelled events by anomaly type: how many, rows touched, hosts hit, typical length.
-- Tables: telemetry.
SELECT anomaly_type,
       count(*) AS events,
       sum(points) AS "rows",
       count(DISTINCT host_id) AS hosts,
       round(avg(minutes), 1) AS avg_minutes
FROM (
  SELECT anomaly_id, CAST(anomaly_type AS VARCHAR) AS anomaly_type, min(CAST(host_id AS VARCHAR)) AS host_id,
         count(*) AS points,
         CAST(CAST(max(ts) AS BIGINT) - CAST(min(ts) AS BIGINT) AS DOUBLE) / 6e7 AS minutes
  FROM telemetry WHERE anomaly_id IS NOT NULL
  GROUP BY anomaly_id, CAST(anomaly_type AS VARCHAR)
)
GROUP BY anomaly_type
ORDER BY events DESC, anomaly_type
