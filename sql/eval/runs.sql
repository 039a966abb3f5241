-- Events of data without anomaly_id: an event is a maximal run of labelled rows (is_anomaly) of
-- one key (host_id) in time order (ts). Returns every row of scored with the columns anomaly_id
-- ('<key>/<run number>' on labelled rows, NULL on the others) and anomaly_type ('labelled' on
-- labelled rows), so the other queries find events as they do in generated data.
-- Tables: scored (without anomaly_id and anomaly_type).
SELECT * EXCLUDE (tads_run),
       CASE WHEN is_anomaly THEN CAST(host_id AS VARCHAR) || '/' || CAST(tads_run AS VARCHAR) END
         AS anomaly_id,
       CASE WHEN is_anomaly THEN 'labelled' END AS anomaly_type
FROM (
  -- Gaps and islands: within a run of labelled rows the two row numbers grow together, so their
  -- difference is constant; the next run starts after at least one unlabelled row, with a larger
  -- difference.
  SELECT *,
         ROW_NUMBER() OVER (PARTITION BY host_id ORDER BY ts)
           - ROW_NUMBER() OVER (PARTITION BY host_id, is_anomaly ORDER BY ts) AS tads_run
  FROM scored
)
