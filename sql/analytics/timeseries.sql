-- The fleet's metrics over time in 6-hour buckets: mean and 95th percentile of each metric.
-- Change the bucket in date_bin (INTERVAL '1 hour', '1 day', ...) for another resolution.
-- Tables: telemetry.
SELECT date_bin(INTERVAL '6 hours', ts, TIMESTAMP '2000-01-01T00:00:00Z') AS bucket,
       count(*) AS "rows",
       round(avg(cpu_pct), 2) AS cpu_pct_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY cpu_pct), 2) AS cpu_pct_p95,
       round(avg(mem_pct), 2) AS mem_pct_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY mem_pct), 2) AS mem_pct_p95,
       round(avg(disk_read_mbps), 2) AS disk_read_mbps_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY disk_read_mbps), 2) AS disk_read_mbps_p95,
       round(avg(disk_write_mbps), 2) AS disk_write_mbps_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY disk_write_mbps), 2) AS disk_write_mbps_p95,
       round(avg(net_rx_mbps), 2) AS net_rx_mbps_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY net_rx_mbps), 2) AS net_rx_mbps_p95,
       round(avg(net_tx_mbps), 2) AS net_tx_mbps_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY net_tx_mbps), 2) AS net_tx_mbps_p95,
       round(avg(latency_ms), 2) AS latency_ms_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 2) AS latency_ms_p95,
       round(avg(error_rate), 3) AS error_rate_mean,
       round(approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY error_rate), 3) AS error_rate_p95
FROM telemetry
GROUP BY 1
ORDER BY 1
