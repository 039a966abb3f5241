//! Measures a model in the space scoring measures rows in (`scoring_space` in `model.json`, see
//! [`tads_model::space`]): per key (the model, or each member of a group), the quantile of its
//! signals over the training rows as scoring sees them, and a PCA fitted on those rows.
//!
//! The rows are read as the seasonal baseline reads them (each value's distance from the previous
//! day's median, [`crate::season::rows_sql`]; the first day has none and drops out). A small table
//! of each key's 24 hours, joined from memory, takes the model's daily cycle at the row's hour
//! out and holds its medians and scales. One statement grouped by key takes the co-moments of
//! the standardized rows (`pca_fit`); the PCA is fitted in Rust. A second statement takes the
//! quantiles: of the model's own SPE, T² and largest |z| (`pca_score`, `pca_t2`, `mad_zmax` of
//! each row's distance less its cycle, plus the model's median), and of the new fit's SPE (the
//! fit registered as a temporary model whose median is 0).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::Int64Type;
use tads_model::season::cycle_at;
use tads_model::space::{AUTO_DAYS, AUTO_RATIO, DEFAULT_QUANTILE};
use tads_model::{
    CoMoments, KRule, ModelArtifact, ModelGroup, PcaParams, ResidualFit, ScoringSpace, SpaceChoice,
    Tail, pca,
};
use tads_sql::ModelRegistry;

use crate::Result;
use crate::season::{BaselineInput, forget_days, register, rows_sql};
use crate::train::{amend, amend_members, collect_rows, f64_at};

const HOURS: &str = "__tads_space_hours";
/// The temporary names of each key's model and of its new fit.
const MODEL: &str = "__tads_space_model";
const FIT: &str = "__tads_space_fit";

/// Training rows a key needs after its first day.
const MIN_ROWS: u64 = 50;

/// Registers `HOURS(__k, __h, __c{j}, __s{j}, __m{j})`: per key and UTC hour of the day, each
/// feature's daily cycle, scale and median.
fn register_hours(
    input: &BaselineInput<'_>,
    models: &BTreeMap<String, &ModelArtifact>,
) -> Result<()> {
    let d = input.cols.len();
    let (mut key, mut hour) = (Vec::new(), Vec::new());
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); 3 * d];
    for (k, m) in models {
        for h in 0..24 {
            key.push(k.clone());
            hour.push(h as i64);
            for j in 0..d {
                values[j].push(cycle_at(m, h, j));
                values[d + j].push(m.scale[j]);
                values[2 * d + j].push(m.median[j]);
            }
        }
    }
    let mut table: Vec<(String, ArrayRef)> = vec![
        ("__k".into(), Arc::new(StringArray::from(key))),
        ("__h".into(), Arc::new(Int64Array::from(hour))),
    ];
    for (i, v) in values.into_iter().enumerate() {
        let name = format!("{}{}", ["__c", "__s", "__m"][i / d], i % d);
        table.push((name, Arc::new(Float64Array::from(v))));
    }
    register(input.ctx, HOURS, table)
}

/// `rows` joined with each key's hour: `select` over them, grouped by key.
fn joined(rows: &str, select: &str) -> String {
    format!(
        "{rows} SELECT w.__k, {select} FROM w JOIN {HOURS} h ON h.__k = w.__k \
         AND h.__h = ((w.__hr % 24) + 24) % 24 GROUP BY 1"
    )
}

/// Per key, the co-moments of its standardized rows.
async fn moments(input: &BaselineInput<'_>, rows: &str) -> Result<BTreeMap<String, CoMoments>> {
    let d = input.cols.len();
    let z: Vec<String> = (0..d)
        .map(|j| format!("(w.__w{j} - h.__c{j}) / h.__s{j}"))
        .collect();
    let sql = joined(rows, &format!("pca_fit({})", z.join(", ")));
    crate::train_groups::moments_by_key(&collect_rows(input.ctx, &sql).await?, d)
}

/// The PCA of each key's rows that has enough of them and leaves a residual space.
async fn fits(
    input: &BaselineInput<'_>,
    rows: &str,
    models: &BTreeMap<String, &ModelArtifact>,
) -> Result<BTreeMap<String, PcaParams>> {
    let d = input.cols.len();
    let mut fitted = BTreeMap::new();
    for (k, m) in moments(input, rows).await? {
        let Some(model) = models.get(&k) else {
            continue;
        };
        let rule = match model.pca.k_rule {
            KRule::Fixed(n) if n >= d => KRule::Fixed(d - 1),
            r => r,
        };
        if m.count() >= MIN_ROWS
            && let Ok(p) = pca::fit(&m, rule)
        {
            fitted.insert(k, PcaParams::from_pca(&p, rule));
        }
    }
    Ok(fitted)
}

/// `name` for one model (`key` empty), `name/key` for a member.
fn temporary_name(name: &str, key: &str) -> String {
    if key.is_empty() {
        name.to_string()
    } else {
        ModelGroup::member_name(name, key)
    }
}

/// Registers each key's model and its new fit (the model's own PCA where it has none, whose
/// quantile is then not used) under temporary names: the fit with a median of 0, so that
/// `pca_score` of a row's distance less its cycle is the fit's SPE.
fn register_temporaries(
    registry: &ModelRegistry,
    models: &BTreeMap<String, &ModelArtifact>,
    fitted: &BTreeMap<String, PcaParams>,
) -> Result<()> {
    for (k, model) in models {
        let mut m = (*model).clone();
        m.name = temporary_name(MODEL, k);
        registry.insert(m.clone().seal())?;
        m.name = temporary_name(FIT, k);
        m.median = vec![0.0; model.dims()];
        if let Some(p) = fitted.get(k) {
            m.pca = p.clone();
        }
        registry.insert(m.seal())?;
    }
    Ok(())
}

/// The scoring spaces of the models `models` (by key; `""` for one model): those with enough
/// rows after their first day.
async fn spaces(
    input: &BaselineInput<'_>,
    registry: &ModelRegistry,
    key: Option<&str>,
    models: &BTreeMap<String, &ModelArtifact>,
) -> Result<BTreeMap<String, ScoringSpace>> {
    let d = input.cols.len();
    if !measurable(input).await? {
        return Ok(BTreeMap::new());
    }
    // Scoring measures each host from its own previous day: so do the rows here, where a model
    // holds many.
    let per = crate::seasonal::per_column(input.ctx, key).await?;
    let rows = rows_sql(input, key, per).await?;
    register_hours(input, models)?;
    let mut fitted = fits(input, &rows, models).await?;
    register_temporaries(registry, models, &fitted)?;
    let name = |prefix: &str| match key {
        None => format!("'{prefix}'"),
        Some(_) => format!("concat('{prefix}/', w.__k)"),
    };
    let list = |f: &dyn Fn(usize) -> String| (0..d).map(f).collect::<Vec<_>>().join(", ");
    let x = list(&|j| format!("w.__w{j} - h.__c{j} + h.__m{j}"));
    let distance = list(&|j| format!("w.__w{j} - h.__c{j}"));
    let (model, fit) = (name(MODEL), name(FIT));
    let q = |f: &str, m: &str, args: &str| {
        input
            .mode
            .quantile(DEFAULT_QUANTILE, &format!("{f}({m}, {args})"))
    };
    let select = [
        "count(*)".to_string(),
        q("pca_score", &model, &x),
        q("pca_t2", &model, &x),
        q("mad_zmax", &model, &x),
        q("pca_score", &fit, &distance),
        "count(DISTINCT (w.__hr - ((w.__hr % 24) + 24) % 24) / 24)".to_string(),
    ]
    .join(", ");
    let batch = collect_rows(input.ctx, &joined(&rows, &select)).await?;
    input.ctx.deregister_table(HOURS)?;
    forget_days(input.ctx)?;
    let positive = |c: usize, i: usize| f64_at(&batch, c, i).filter(|v| v.is_finite() && *v > 0.0);
    let counts = batch.column(1).as_primitive::<Int64Type>();
    let days = batch.column(6).as_primitive::<Int64Type>();
    let keys = crate::train_groups::keys_of(&batch)?;
    Ok(keys
        .into_iter()
        .enumerate()
        .filter(|(i, k)| models.contains_key(k) && counts.value(*i) as u64 >= MIN_ROWS)
        .map(|(i, k)| {
            let residual = fitted
                .remove(&k)
                .zip(positive(5, i))
                .map(|(pca, limit)| ResidualFit { pca, limit });
            let tail = Tail {
                quantile: DEFAULT_QUANTILE,
                spe: positive(2, i),
                t2: positive(3, i),
                zmax: positive(4, i),
            };
            let space = ScoringSpace {
                rows: counts.value(i) as u64,
                days: days.value(i) as u64,
                tail,
                residual,
            };
            (k, space)
        })
        .collect())
}

const WHY_NOT: &str = "it needs two or more features, a timestamp column `ts` and at least 50 \
                       rows after the first training day";

/// Whether a model of these features can be measured in the scoring space: two or more (one
/// metric has no components to misplace and no SPE; measured on the univariate real sets, its
/// tails there only cost event recall, see the README) and a timestamp column.
async fn measurable(input: &BaselineInput<'_>) -> Result<bool> {
    Ok(input.cols.len() >= 2 && crate::seasonal::has_time(input.ctx).await?)
}

/// Whether the automatic choice can keep any section: a measurable model, and training rows
/// that span [`AUTO_DAYS`] days after the first (one pass over the time column, so that
/// shorter histories cost nothing).
async fn long_enough(input: &BaselineInput<'_>) -> Result<bool> {
    if !measurable(input).await? {
        return Ok(false);
    }
    let ts = crate::ident(crate::seasonal::TIME);
    let day = |f: &str| format!("floor(to_unixtime({f}({ts})) / 86400)");
    let sql = format!(
        "SELECT CAST({} - {} AS BIGINT) FROM telemetry WHERE {}",
        day("max"),
        day("min"),
        input.filter
    );
    let batch = collect_rows(input.ctx, &sql).await?;
    Ok(f64_at(&batch, 0, 0).is_some_and(|span| span >= AUTO_DAYS as f64))
}

/// The automatic choice's verdict on `model`'s measured `section`.
fn verdict(model: &ModelArtifact, section: &ScoringSpace) -> tads_model::Verdict {
    section.auto_verdict(model.thresholds.spe_empirical_99)
}

/// The rule the automatic choice applies, for the notes.
fn rule() -> String {
    format!(
        "kept where its SPE's 0.99 quantile there is at least {AUTO_RATIO}× the raw rows' over \
         {AUTO_DAYS} days or more; `--scoring-space` keeps it always, `--no-scoring-space` \
         never measures it"
    )
}

/// Measures and stores the scoring space of one model, as `choice` says.
pub(crate) async fn single(
    input: &BaselineInput<'_>,
    registry: &ModelRegistry,
    model: ModelArtifact,
    choice: SpaceChoice,
) -> Result<ModelArtifact> {
    if choice == SpaceChoice::Auto && !long_enough(input).await? {
        return Ok(model);
    }
    let models = BTreeMap::from([(String::new(), &model)]);
    let space = spaces(input, registry, None, &models)
        .await?
        .into_values()
        .next();
    if space.is_none() && choice == SpaceChoice::Always {
        eprintln!(
            "note: model `{}`: not measured in the scoring space: {WHY_NOT}",
            model.name
        );
    }
    let rejected = space
        .as_ref()
        .filter(|_| choice == SpaceChoice::Auto)
        .map(|s| verdict(&model, s))
        .filter(|v| !v.keep);
    let space = space.filter(|_| rejected.is_none());
    if let Some(v) = rejected {
        eprintln!(
            "note: model `{}`: measured in the scoring space over {} days, its SPE's 0.99 \
             quantile there {} the raw rows': not kept ({})",
            model.name,
            v.days,
            v.ratio
                .map_or("unknown against".to_string(), |r| format!("{r:.1}×")),
            rule()
        );
    }
    amend(model, |m| m.scoring_space = space)
}

/// Measures and stores the scoring space of each member of a group, by the group's column, as
/// `choice` says.
pub(crate) async fn group(
    input: &BaselineInput<'_>,
    registry: &ModelRegistry,
    group: ModelGroup,
    choice: SpaceChoice,
) -> Result<ModelGroup> {
    if choice == SpaceChoice::Auto && !long_enough(input).await? {
        return Ok(group);
    }
    let members = crate::season::members_by_key(&group);
    let mut found = spaces(input, registry, Some(&group.group_by), &members).await?;
    let missing = group.members.len() - found.len();
    if missing > 0 && choice == SpaceChoice::Always {
        eprintln!(
            "note: group `{}`: {missing} of {} members not measured in the scoring space: {WHY_NOT}",
            group.name,
            group.members.len()
        );
    }
    let measured = found.len();
    if choice == SpaceChoice::Auto {
        found.retain(|key, s| members.get(key).is_some_and(|m| verdict(m, s).keep));
        if measured > 0 {
            eprintln!(
                "note: group `{}`: {} of {measured} members measured in the scoring space keep \
                 it ({})",
                group.name,
                found.len(),
                rule()
            );
        }
    }
    amend_members(group, |key, m| m.scoring_space = found.remove(key))
}
