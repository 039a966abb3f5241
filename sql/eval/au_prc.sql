-- AU-PRC of the score against the labels, threshold-free, as average precision: rows sorted by
-- score, highest first (NULL scores last), rows of equal score taken together as one threshold;
-- the sum over labelled rows of the precision at their threshold, divided by the labelled rows.
-- au_prc is over all rows; au_prc_mean_by_key the mean of each key's (host_id) own AU-PRC over
-- the keys with at least one labelled row, au_prc_keys how many those are.
-- Tables: scored.
WITH levels AS (
  SELECT host_id, score, COUNT(*) AS n, SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END) AS pos
  FROM scored GROUP BY host_id, score
),
overall AS (
  SELECT pos,
         SUM(pos) OVER (ORDER BY score DESC NULLS LAST
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_pos,
         SUM(n) OVER (ORDER BY score DESC NULLS LAST
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_n
  FROM (SELECT score, SUM(n) AS n, SUM(pos) AS pos FROM levels GROUP BY score)
),
by_key AS (
  SELECT host_id, pos,
         SUM(pos) OVER (PARTITION BY host_id ORDER BY score DESC NULLS LAST
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_pos,
         SUM(n) OVER (PARTITION BY host_id ORDER BY score DESC NULLS LAST
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum_n
  FROM levels
),
per_key AS (
  SELECT host_id, SUM(pos * cum_pos / CAST(cum_n AS DOUBLE)) / SUM(pos) AS ap
  FROM by_key GROUP BY host_id HAVING SUM(pos) > 0
)
SELECT (SELECT CASE WHEN SUM(pos) > 0 THEN SUM(pos * cum_pos / CAST(cum_n AS DOUBLE)) / SUM(pos) END
        FROM overall) AS au_prc,
       (SELECT AVG(ap) FROM per_key) AS au_prc_mean_by_key,
       (SELECT COUNT(*) FROM per_key) AS au_prc_keys
