//! `tads train --scoring-space`: the model measured on its training rows as scoring measures
//! them, checked against the same numbers computed here in memory from the Parquet rows, and
//! its two parts in the fused score.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use tads_model::{CoMoments, KRule, ModelArtifact, ModelGroup, pca};

use crate::support::{
    FEATURES, assert_ok, files_below, generate, register_dir, score_cmd, train_cmd,
};

/// Five hosts, four days at five minutes.
const DATA: &[&str] = &[
    "--hosts",
    "5",
    "--duration",
    "4d",
    "--interval",
    "5m",
    "--anomaly-rate",
    "1",
    "--seed",
    "7",
];

fn read_model(models: &Path, name: &str) -> ModelArtifact {
    ModelArtifact::from_json(&std::fs::read(models.join(name).join("model.json")).unwrap()).unwrap()
}

/// A row's host, epoch second and features.
type Row = (String, i64, Vec<f64>);

/// Every row's host, epoch second and features, in time order (of one host, if given).
async fn rows(data: &Path, host: Option<&str>) -> Vec<Row> {
    let ctx = datafusion::prelude::SessionContext::new();
    register_dir(&ctx, "t", data).await;
    let filter = host.map_or(String::new(), |h| {
        format!("WHERE CAST(host_id AS VARCHAR) = '{h}'")
    });
    let sql = format!(
        "SELECT CAST(to_unixtime(ts) AS BIGINT), {}, CAST(host_id AS VARCHAR) FROM t {filter} \
         ORDER BY ts",
        FEATURES.map(|f| format!("CAST({f} AS DOUBLE)")).join(", ")
    );
    let mut out = Vec::new();
    for b in ctx.sql(&sql).await.unwrap().collect().await.unwrap() {
        let secs = b.column(0).as_primitive::<Int64Type>();
        let hosts = datafusion::arrow::compute::cast(
            b.column(FEATURES.len() + 1),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let hosts = hosts.as_string::<i32>();
        for i in 0..b.num_rows() {
            let x = (1..=FEATURES.len())
                .map(|c| {
                    let v = b.column(c).as_primitive::<Float64Type>();
                    if v.is_valid(i) { v.value(i) } else { f64::NAN }
                })
                .collect();
            out.push((hosts.value(i).to_string(), secs.value(i), x));
        }
    }
    out
}

/// The median of the finite values, as SQL's `median` takes it.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    })
}

/// `percentile_cont(q)` of the values.
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Each row from its host's second day on, standardized as scoring measures it: less its
/// host's previous UTC day's median and the model's cycle at its hour, over the model's scale.
fn scoring_rows(rows: &[Row], m: &ModelArtifact) -> Vec<Vec<f64>> {
    let d = m.dims();
    let mut days: BTreeMap<(&str, i64), Vec<Vec<f64>>> = BTreeMap::new();
    for (host, t, x) in rows {
        let day = days
            .entry((host.as_str(), t.div_euclid(86_400)))
            .or_insert_with(|| vec![Vec::new(); d]);
        for j in 0..d {
            day[j].push(x[j]);
        }
    }
    let medians: BTreeMap<(&str, i64), Vec<Option<f64>>> = days
        .into_iter()
        .map(|(day, cols)| (day, cols.into_iter().map(median).collect()))
        .collect();
    rows.iter()
        .filter_map(|(host, t, x)| {
            let previous = medians.get(&(host.as_str(), t.div_euclid(86_400) - 1))?;
            let hour = t.div_euclid(3600).rem_euclid(24) as usize;
            Some(
                (0..d)
                    .map(|j| {
                        let w = x[j] - previous[j].unwrap_or(f64::NAN);
                        (w - tads_model::season::cycle_at(m, hour, j)) / m.scale[j]
                    })
                    .collect(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-9),
        "{what}: {a} (tads) vs {b} (here)"
    );
}

/// Checks `m`'s section against its training `rows`, computed here: the row count, the 0.99
/// quantiles of the largest |z|, the SPE and T², and the second PCA's k and eigenvalues.
fn check_against_rows(m: &ModelArtifact, rows: &[Row]) {
    let space = m.scoring_space.clone().expect("a scoring space");
    let z = scoring_rows(rows, m);
    assert_eq!(space.rows, z.len() as u64, "rows after the first day");
    assert_eq!(space.tail.quantile, 0.99);
    let finite: Vec<&Vec<f64>> = z
        .iter()
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .collect();
    let zmax: Vec<f64> = finite
        .iter()
        .map(|r| r.iter().fold(0.0f64, |a, v| a.max(v.abs())))
        .collect();
    close(
        space.tail.zmax.unwrap(),
        percentile(zmax, 0.99),
        "the 0.99 quantile of the largest |z|",
    );
    // The main fit's SPE and T² of the same rows, given back in the metrics' units.
    let x: Vec<Vec<f64>> = (0..FEATURES.len())
        .map(|j| {
            finite
                .iter()
                .map(|r| r[j] * m.scale[j] + m.median[j])
                .collect()
        })
        .collect();
    let x: Vec<&[f64]> = x.iter().map(Vec::as_slice).collect();
    let scorer = tads_model::Scorer::new(m);
    let (mut spe, mut t2) = (vec![0.0; finite.len()], vec![0.0; finite.len()]);
    scorer.spe(&x, &mut spe);
    scorer.t2(&x, &mut t2);
    close(space.tail.spe.unwrap(), percentile(spe, 0.99), "the SPE's");
    close(space.tail.t2.unwrap(), percentile(t2, 0.99), "the T²'s");
    let residual = space.residual.clone().expect("a second PCA");
    let mut moments = CoMoments::new(FEATURES.len());
    let columns: Vec<Vec<f64>> = (0..FEATURES.len())
        .map(|j| finite.iter().map(|r| r[j]).collect())
        .collect();
    moments.update(&columns.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let here = pca::fit(&moments, KRule::Variance(0.95)).unwrap();
    assert_eq!(residual.pca.k, here.k());
    for (a, b) in residual.pca.eigenvalues.iter().zip(&here.eigenvalues) {
        close(*a, *b, "an eigenvalue of the scoring space's covariance");
    }
    assert!(residual.limit > 0.0);
}

/// The section holds what the training rows say in the scoring space: its row count, the
/// 0.99 quantile of the largest |z|, and a PCA with the eigenvalues of those rows' covariance.
/// In the fused score, the second PCA's SPE only ever raises a row's score; with both parts
/// turned off the score is exactly the same model's without the section. One metric, and a
/// group, too.
#[tokio::test]
async fn the_scoring_space_is_what_the_training_rows_say_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    assert_ok(&generate(data.to_str().unwrap(), DATA));
    assert_ok(&train_cmd("plain", &data, &models, &[]));
    let run = train_cmd("space", &data, &models, &["--scoring-space"]);
    assert_ok(&run);
    let m = read_model(&models, "space");
    assert!(
        read_model(&models, "plain").scoring_space.is_none(),
        "measured without being asked"
    );
    assert!(
        m.scoring_space.as_ref().expect("a scoring space").rows > 3 * 5 * 250,
        "rows after the first day"
    );
    // The same model without the section, to score beside it (two trainings may differ in
    // the last bits: their partial sums merge in any order).
    let mut stripped = m.clone();
    stripped.name = "stripped".into();
    stripped.scoring_space = None;
    std::fs::create_dir_all(models.join("stripped")).unwrap();
    std::fs::write(
        models.join("stripped/model.json"),
        stripped.seal().to_json(),
    )
    .unwrap();

    check_against_rows(&m, &rows(&data, None).await);

    // The fused score: the second SPE joins by its maximum; both parts off, a plain model's.
    let score = |model: &str, out: &str, args: &[&str]| -> Vec<f64> {
        let out = tmp.path().join(out);
        assert_ok(&score_cmd(model, &data, &models, &out, args));
        let scored = out.join("scored");
        let mut v = Vec::new();
        for f in files_below(&scored)
            .iter()
            .filter(|f| f.ends_with(".parquet"))
        {
            let reader =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                    std::fs::File::open(scored.join(f)).unwrap(),
                    8192,
                )
                .unwrap();
            for b in reader {
                let b = b.unwrap();
                let c = b
                    .column_by_name("score")
                    .unwrap()
                    .as_primitive::<Float64Type>();
                v.extend(
                    (0..b.num_rows()).map(|i| if c.is_valid(i) { c.value(i) } else { f64::NAN }),
                );
            }
        }
        v
    };
    let base = score("stripped", "s-stripped", &[]);
    let off = [
        "--set",
        "fusion.scoring_tail=false",
        "--set",
        "fusion.residual_pca=false",
    ];
    let both_off = score("space", "s-off", &off);
    assert_eq!(
        base.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        both_off.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "with both parts off the score is the model's without them"
    );
    let raised = score("space", "s-resid", &["--set", "fusion.scoring_tail=false"]);
    let (mut above, mut below) = (0, 0);
    for (r, b) in raised.iter().zip(&base) {
        if r.is_nan() || b.is_nan() {
            continue;
        }
        above += usize::from(r > b);
        below += usize::from(r < b);
    }
    assert!(above > 0, "the second SPE never led a row");
    assert_eq!(below, 0, "the second SPE lowered {below} rows");
    let full = score("space", "s-full", &[]);
    assert_ne!(
        full, raised,
        "the tails in the scoring space changed nothing"
    );

    // The `models` table says which models have the section.
    let ctx = crate::support::tads_session(&models).await;
    let listed = crate::support::query(
        &ctx,
        "SELECT name, scoring_space FROM models WHERE name IN ('plain', 'space') ORDER BY name",
    )
    .await;
    let listed = datafusion::arrow::compute::concat_batches(&listed[0].schema(), &listed).unwrap();
    let flags = listed.column(1).as_boolean();
    assert_eq!((flags.value(0), flags.value(1)), (false, true));

    // One metric: nothing to measure, said once.
    let one = train_cmd(
        "one",
        &data,
        &models,
        &["--scoring-space", "--features", "cpu_pct"],
    );
    assert_ok(&one);
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(
        stderr.contains("not measured in the scoring space: it needs two or more features"),
        "{stderr}"
    );
    assert!(read_model(&models, "one").scoring_space.is_none());

    // A group: each member measured on its own rows.
    let run = train_cmd(
        "hosts",
        &data,
        &models,
        &["--scoring-space", "--group-by", "host_id"],
    );
    assert_ok(&run);
    let group =
        ModelGroup::from_json(&std::fs::read(models.join("hosts/group.json")).unwrap()).unwrap();
    assert_eq!(group.members.len(), 5);
    for member in &group.members {
        // Each member has its own daily cycle on every metric, which its rows lose here.
        let cycle = member.seasonal.as_ref().expect("a daily cycle");
        assert_eq!(cycle.features.len(), FEATURES.len(), "{cycle:?}");
        let key = group.key_of(member).to_string();
        check_against_rows(member, &rows(&data, Some(&key)).await);
    }
}

/// The daily cycle a model of many hosts learns is measured per host, as scoring's drift
/// baseline measures rows: per UTC hour, the median of each row's distance from its own host's
/// median of that day (not from the median of every host's rows of that day), computed here from
/// the Parquet rows. Two hosts: a generated one, and the same rows a standard deviation higher.
#[tokio::test]
async fn a_model_of_many_hosts_learns_its_daily_cycle_per_host() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, data, models) = (
        tmp.path().join("one"),
        tmp.path().join("two"),
        tmp.path().join("models"),
    );
    let mut args = DATA.to_vec();
    args[1] = "1";
    assert_ok(&generate(one.to_str().unwrap(), &args));
    let ctx = datafusion::prelude::SessionContext::new();
    register_dir(&ctx, "t", &one).await;
    let cols = |shift: bool| {
        FEATURES
            .map(|f| match shift {
                false => format!("CAST({f} AS DOUBLE) AS {f}"),
                true => format!("CAST({f} AS DOUBLE) + (SELECT stddev({f}) FROM t) AS {f}"),
            })
            .join(", ")
    };
    std::fs::create_dir_all(&data).unwrap();
    let sql = format!(
        "COPY (SELECT ts, 'a' AS host_id, {} FROM t UNION ALL \
         SELECT ts, 'b' AS host_id, {} FROM t) TO '{}' STORED AS PARQUET",
        cols(false),
        cols(true),
        data.join("two.parquet").display()
    );
    ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    assert_ok(&train_cmd("fleet", &data, &models, &[]));
    let m = read_model(&models, "fleet");
    let cycle = m.seasonal.as_ref().expect("a daily cycle");
    let rows = rows(&data, None).await;
    let d = m.dims();
    let mut days: BTreeMap<(&str, i64), Vec<Vec<f64>>> = BTreeMap::new();
    for (host, t, x) in &rows {
        let day = days
            .entry((host.as_str(), t.div_euclid(86_400)))
            .or_insert_with(|| vec![Vec::new(); d]);
        for j in 0..d {
            day[j].push(x[j]);
        }
    }
    let medians: BTreeMap<(&str, i64), Vec<f64>> = days
        .into_iter()
        .map(|(k, cols)| {
            let m = cols.into_iter().map(|c| median(c).unwrap_or(f64::NAN));
            (k, m.collect())
        })
        .collect();
    let mut hours = vec![vec![Vec::new(); d]; 24];
    for (host, t, x) in &rows {
        let day = &medians[&(host.as_str(), t.div_euclid(86_400))];
        let h = t.div_euclid(3600).rem_euclid(24) as usize;
        for j in 0..d {
            hours[h][j].push(x[j] - day[j]);
        }
    }
    assert!(!cycle.features.is_empty(), "no feature with a cycle");
    for f in &cycle.features {
        let j = m.features.iter().position(|x| x == f).unwrap();
        for (h, at) in hours.iter().enumerate() {
            let here = median(at[j].clone()).unwrap();
            close(cycle.profile[h][j], here, &format!("cycle of {f} at {h}h"));
        }
    }
}

/// By default the section is measured only where the training rows span a week after their
/// first day, and kept only where the model's own SPE tail there is far above its raw one
/// (`tads_model::space::AUTO_RATIO`): on a real JumpStarter service (20 training days) it is
/// kept; on generated data of nine days it is measured and left out, said once on stderr;
/// `--no-scoring-space` never measures it.
#[tokio::test]
async fn by_default_the_scoring_space_is_kept_where_the_models_limits_do_not_hold_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, models) = (tmp.path().join("data"), tmp.path().join("models"));
    let series = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/real/jumpstarter_d2/service0");
    let train = series.join("train.parquet");
    assert_ok(&train_cmd("real", &train, &models, &[]));
    let m = read_model(&models, "real");
    let space = m.scoring_space.as_ref().expect("kept on the real service");
    let verdict = space.auto_verdict(m.thresholds.spe_empirical_99);
    assert!(verdict.keep && verdict.days >= 19, "{verdict:?}");
    assert!(
        verdict.ratio.unwrap() >= tads_model::space::AUTO_RATIO,
        "{verdict:?}"
    );
    assert_ok(&train_cmd(
        "never",
        &train,
        &models,
        &["--no-scoring-space"],
    ));
    assert!(read_model(&models, "never").scoring_space.is_none());

    let mut args = DATA.to_vec();
    args[3] = "9d";
    assert_ok(&generate(data.to_str().unwrap(), &args));
    let run = train_cmd("generated", &data, &models, &[]);
    assert_ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("measured in the scoring space over 8 days") && stderr.contains("not kept"),
        "{stderr}"
    );
    assert!(read_model(&models, "generated").scoring_space.is_none());
    // Asked for, the same section is kept.
    assert_ok(&train_cmd("asked", &data, &models, &["--scoring-space"]));
    let asked = read_model(&models, "asked");
    let space = asked.scoring_space.as_ref().expect("kept when asked");
    assert_eq!(space.days, 8);
    assert!(
        !space.auto_verdict(asked.thresholds.spe_empirical_99).keep,
        "the automatic choice would keep it"
    );
}
