//! `tads train --group-by COL`: one model per value of a column, fitted by the same passes as
//! [`crate::train`], each a single `GROUP BY` statement over the whole dataset:
//! 1. `robust_stats` per feature and group;
//! 2. `pca_fit` of the standardized rows inside the robust cut, per group: the rows are joined
//!    with a small table of each group's medians and scales;
//! 3. `percentile_cont` of each group's SPE (the members are registered as models
//!    `__tads_train/<value>` and picked by `pca_score(concat('__tads_train/', key), …)`).
//!
//! A value with fewer than [`min_rows`] rows, or whose rows cannot make a PCA, gets no model
//! and is listed under `skipped` in `group.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, UInt64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use tads_model::train::{Fitted, Standardizer, artifact};
use tads_model::{CoMoments, ModelGroup, RobustStats, SkippedMember, pca};

use crate::train::{Prepared, TrainJob, collect, f64_at, literal, percentiles, register_temporary};
use crate::{Error, Result, ident};

/// The fewest rows a group needs for a model: ten per feature, and at least 50.
pub fn min_rows(d: usize) -> u64 {
    (10 * d as u64).max(50)
}

/// One group on its way to a model.
struct Member {
    rows: u64,
    standardizer: Standardizer,
    moments: Option<CoMoments>,
    pca: Option<tads_model::Pca>,
    limit: Option<f64>,
    quantiles: (Option<f64>, Option<f64>),
}

pub(crate) fn keys_of(batch: &RecordBatch) -> Result<Vec<String>> {
    let keys =
        cast(batch.column(0), &DataType::Utf8).map_err(datafusion::error::DataFusionError::from)?;
    Ok(keys
        .as_string::<i32>()
        .iter()
        .map(|k| k.unwrap_or_default().to_string())
        .collect())
}

/// The co-moments of each key of `batch`, rows of `(key, pca_fit(d columns))`; keys whose
/// state is NULL (no row) are left out.
pub(crate) fn moments_by_key(batch: &RecordBatch, d: usize) -> Result<BTreeMap<String, CoMoments>> {
    let keys = keys_of(batch)?;
    let s = batch.column(1).as_struct();
    let mut out = BTreeMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        if s.is_null(i) {
            continue;
        }
        let count = s.column(0).as_primitive::<UInt64Type>().value(i);
        let list = |c: usize| {
            s.column(c)
                .as_list::<i32>()
                .value(i)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        };
        let m = CoMoments::from_parts(d, count, list(1), list(2))
            .ok_or_else(|| Error::Data("pca_fit returned a state of the wrong width".into()))?;
        out.insert(k, m);
    }
    Ok(out)
}

/// `__tads_groups(__key, m0…, s0…, lim)`: each group's standardization and trim limit.
fn register_groups(
    ctx: &SessionContext,
    members: &BTreeMap<String, Member>,
    d: usize,
) -> Result<()> {
    let live: Vec<(&String, &Member)> = members.iter().collect();
    let mut fields = vec![Field::new("__key", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(
        live.iter().map(|(k, _)| k.as_str()),
    ))];
    for j in 0..d {
        fields.push(Field::new(format!("m{j}"), DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from_iter_values(
            live.iter().map(|(_, m)| m.standardizer.median[j]),
        )));
    }
    for j in 0..d {
        fields.push(Field::new(format!("s{j}"), DataType::Float64, false));
        columns.push(Arc::new(Float64Array::from_iter_values(
            live.iter().map(|(_, m)| m.standardizer.scale[j]),
        )));
    }
    fields.push(Field::new("lim", DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter(
        live.iter().map(|(_, m)| m.limit),
    )));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(datafusion::error::DataFusionError::from)?;
    let _ = ctx.deregister_table("__tads_groups");
    ctx.register_table(
        "__tads_groups",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;
    Ok(())
}

/// Trains one model per value of `group_by` and writes `<models>/<name>/group.json`.
pub(crate) async fn train_groups(
    job: &TrainJob,
    group_by: &str,
    prepared: Prepared,
) -> Result<(ModelGroup, u64)> {
    let Prepared {
        ctx,
        registry,
        features,
        filter,
        cols,
    } = prepared;
    let d = features.len();
    let key = format!("CAST({} AS VARCHAR)", ident(group_by));
    let source = format!(
        "(SELECT {key} AS __key, {} FROM telemetry WHERE {filter} AND {} IS NOT NULL) t",
        cols.join(", "),
        ident(group_by)
    );
    let tcols: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();

    // Pass 1: medians and MADs per group.
    let batch = job
        .quantiles
        .robust_pass(&ctx, &source, &cols, true)
        .await?;
    let keys = keys_of(&batch)?;
    let counts = batch.column(1).as_primitive::<Int64Type>();
    let rows_seen: u64 = counts.values().iter().map(|c| *c as u64).sum();
    if rows_seen == 0 {
        return Err(Error::Data(format!(
            "{}: no rows with a `{group_by}`{}",
            job.data,
            job.filter
                .as_ref()
                .map_or(String::new(), |f| format!(" match --where {f}"))
        )));
    }
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let rows = counts.value(i) as u64;
        let mut stats = Vec::with_capacity(d);
        for (j, name) in features.iter().enumerate() {
            let s = batch.column(j + 2).as_struct();
            let field = |f: &str| {
                let c = s.column_by_name(f)?.as_primitive::<Float64Type>();
                c.is_valid(i).then(|| c.value(i))
            };
            // A feature without usable statistics skips the whole value, naming why.
            let reason = match (field("median"), field("mad")) {
                (Some(median), Some(mad)) => match crate::train::too_large(name, median, mad) {
                    None => {
                        stats.push(RobustStats {
                            count: s
                                .column_by_name("count")
                                .map_or(0, |c| c.as_primitive::<UInt64Type>().value(i)),
                            median,
                            mad,
                            mean_ad: field("mean_ad").unwrap_or(0.0),
                            low: field("low").unwrap_or(f64::NAN),
                            high: field("high").unwrap_or(f64::NAN),
                        });
                        continue;
                    }
                    Some(too_large) => too_large,
                },
                _ => format!("feature `{name}` has no finite value"),
            };
            skipped.push(SkippedMember {
                key: k.clone(),
                rows,
                reason,
            });
            break;
        }
        if stats.len() < d {
            continue;
        }
        if rows < min_rows(d) {
            skipped.push(SkippedMember {
                key: k.clone(),
                rows,
                reason: format!("{rows} rows, fewer than {}", min_rows(d)),
            });
            continue;
        }
        members.insert(
            k.clone(),
            Member {
                rows,
                standardizer: Standardizer::new(&stats, job.options.tail_scale),
                moments: None,
                pca: None,
                limit: None,
                quantiles: (None, None),
            },
        );
    }
    register_groups(&ctx, &members, d)?;

    let z: Vec<String> = (0..d)
        .map(|j| format!("(({} - g.m{j}) / g.s{j})", tcols[j]))
        .collect();
    let cut = literal(job.options.robust_z_cut);
    let inside = z
        .iter()
        .map(|z| format!("abs({z}) <= {cut}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let joined = format!("{source} JOIN __tads_groups g ON t.__key = g.__key WHERE {inside}");
    let score = |prefix: &str| {
        format!(
            "pca_score(concat('{prefix}/', t.__key), {})",
            tcols.join(", ")
        )
    };

    // Pass 2: co-moments per group, then each group's PCA.
    let fit = |extra: String| {
        let (ctx, z, joined) = (&ctx, &z, &joined);
        async move {
            let sql = format!(
                "SELECT t.__key, pca_fit({}) FROM {joined}{extra} GROUP BY t.__key",
                z.join(", ")
            );
            moments_by_key(&collect(ctx, &sql).await?, d)
        }
    };
    let apply = |members: &mut BTreeMap<String, Member>,
                 skipped: &mut Vec<SkippedMember>,
                 moments: BTreeMap<String, CoMoments>| {
        let keys: Vec<String> = members.keys().cloned().collect();
        for k in keys {
            let fitted = moments
                .get(&k)
                .ok_or_else(|| format!("no row lies inside the robust cut |z| <= {cut}"))
                .and_then(|m| pca::fit(m, job.options.k_rule).map(|p| (m.clone(), p)));
            match fitted {
                Ok((m, p)) => {
                    let member = members.get_mut(&k).expect("key from members");
                    member.moments = Some(m);
                    member.pca = Some(p);
                }
                Err(reason) => {
                    let rows = members.remove(&k).map_or(0, |m| m.rows);
                    skipped.push(SkippedMember {
                        key: k,
                        rows,
                        reason,
                    });
                }
            }
        }
    };
    // Registers each member's PCA as `<prefix>/<key>`, for `pca_score`.
    let register = |prefix: &str, members: &BTreeMap<String, Member>| -> Result<()> {
        for (k, m) in members {
            let Some(p) = &m.pca else { continue };
            let name = ModelGroup::member_name(prefix, k);
            register_temporary(&registry, &name, &features, &m.standardizer, p, job)?;
        }
        Ok(())
    };
    let quantiles = |score: String, extra: String, qs: Vec<f64>| {
        let (ctx, joined) = (&ctx, &joined);
        async move {
            let select = percentiles(job.quantiles, &score, &qs);
            let batch = collect(
                ctx,
                &format!("SELECT t.__key, {select} FROM {joined}{extra} GROUP BY t.__key"),
            )
            .await?;
            let keys = keys_of(&batch)?;
            let mut out: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
            for (i, k) in keys.into_iter().enumerate() {
                let values = (0..qs.len()).map(|c| f64_at(&batch, c + 1, i)).collect();
                out.insert(k, values);
            }
            Ok::<_, Error>(out)
        }
    };

    apply(&mut members, &mut skipped, fit(String::new()).await?);
    register_groups(&ctx, &members, d)?;
    let mut extra = String::new();
    if let Some(trim) = job.options.trim.filter(|t| *t > 0.0) {
        register("__tads_trim", &members)?;
        let first = score("__tads_trim");
        let q = quantiles(first.clone(), String::new(), vec![1.0 - trim]).await?;
        for (k, m) in members.iter_mut() {
            m.limit = q.get(k).and_then(|v| v[0]);
        }
        register_groups(&ctx, &members, d)?;
        extra = format!(" AND (g.lim IS NULL OR {first} <= g.lim)");
        apply(&mut members, &mut skipped, fit(extra.clone()).await?);
        register_groups(&ctx, &members, d)?;
    }
    register("__tads_train", &members)?;
    let q = quantiles(score("__tads_train"), extra, vec![0.99, 0.999]).await?;
    for (k, m) in members.iter_mut() {
        if let Some(v) = q.get(k) {
            m.quantiles = (v[0], v[1]);
        }
    }

    let mut built = Vec::with_capacity(members.len());
    for (k, m) in &members {
        let (Some(p), Some(moments)) = (&m.pca, &m.moments) else {
            continue;
        };
        let fitted = Fitted {
            standardizer: m.standardizer.clone(),
            pca: p.clone(),
            rows_used: moments.count(),
            spe_quantiles: m.quantiles,
        };
        built.push(artifact(
            &ModelGroup::member_name(&job.name, k),
            &features,
            &fitted,
            &job.options,
            m.rows,
            job.data.data_url().as_str(),
            job.filter.clone(),
        )?);
    }
    if built.is_empty() {
        return Err(Error::Data(format!(
            "no value of `{group_by}` got a model ({} skipped; the first: `{}`: {})",
            skipped.len(),
            skipped.first().map_or("", |s| s.key.as_str()),
            skipped.first().map_or("", |s| s.reason.as_str())
        )));
    }
    skipped.sort_by(|a, b| a.key.cmp(&b.key));
    let group = ModelGroup {
        schema_version: tads_model::SCHEMA_VERSION,
        kind: "tads-model-group".into(),
        name: job.name.clone(),
        group_by: group_by.to_string(),
        features,
        members: built,
        skipped,
        rows_seen,
        data_uri: job.data.data_url().to_string(),
        filter: job.filter.clone(),
        created_at: chrono::Utc::now(),
        fingerprint: String::new(),
    }
    .seal();
    group.validate()?;
    Ok((group, rows_seen))
}
