-- Dataset summary: rows, hosts, regions, projects, time span, labelled rows and events.
-- Tables: telemetry.
SELECT count(*) AS "rows",
       count(DISTINCT host_id) AS hosts,
       count(DISTINCT region) AS regions,
       count(DISTINCT project_id) AS projects,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       round(CAST(CAST(max(ts) AS BIGINT) - CAST(min(ts) AS BIGINT) AS DOUBLE) / 3.6e9, 1) AS span_hours,
       sum(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS anomalous_rows,
       count(DISTINCT anomaly_id) AS events
FROM telemetry
