//! Reading the numbers out of the evaluation queries' results.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::{Breakdown, Counts};
use crate::{Error, Result};

/// A column of a result, cast to `to`.
fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Data(format!("eval: no column `{name}` in a result")))?;
    Ok(cast(col, to)?)
}

/// A column of a result as f64 values (NULL as `None`).
pub(super) fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name, &DataType::Float64)?;
    let col = col.as_primitive::<Float64Type>();
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i)))
        .collect())
}

/// A column of a result as counts (NULL and negative values as 0).
pub(super) fn ints(batch: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    let col = column(batch, name, &DataType::Int64)?;
    let col = col.as_primitive::<Int64Type>();
    Ok((0..col.len())
        .map(|i| {
            if col.is_valid(i) {
                col.value(i).max(0) as u64
            } else {
                0
            }
        })
        .collect())
}

/// A column of a result as text (NULL as `(none)`).
pub(super) fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = column(batch, name, &DataType::Utf8)?;
    let col = col.as_string::<i32>();
    Ok((0..col.len())
        .map(|i| {
            if col.is_valid(i) {
                col.value(i).to_string()
            } else {
                "(none)".into()
            }
        })
        .collect())
}

/// The one row of a single-row result: its counts, and its rates as f64.
pub(super) struct Row<'a>(pub &'a RecordBatch);

impl Row<'_> {
    /// Column `name` as a count.
    pub fn int(&self, name: &str) -> Result<u64> {
        Ok(ints(self.0, name)?.first().copied().unwrap_or(0))
    }
    /// Column `name` as a number, `None` when NULL.
    pub fn float(&self, name: &str) -> Result<Option<f64>> {
        Ok(floats(self.0, name)?.first().copied().flatten())
    }
}

/// The confusion counts and rates of row `row`.
pub(super) fn counts(batch: &RecordBatch, row: usize) -> Result<Counts> {
    let int = |n| ints(batch, n).map(|v| v.get(row).copied().unwrap_or(0));
    let float = |n| floats(batch, n).map(|v| v.get(row).copied().flatten());
    Ok(Counts {
        tp: int("tp")?,
        fp: int("fp")?,
        r#fn: int("fn")?,
        tn: if batch.column_by_name("tn").is_some() {
            int("tn")?
        } else {
            0
        },
        precision: float("precision")?,
        recall: float("recall")?,
        f1: float("f1")?,
    })
}

/// The rows of a by-region or by-project result, by `key`.
pub(super) fn breakdown(batches: &[RecordBatch], key: &str) -> Result<BTreeMap<String, Breakdown>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let (keys, events, detected) = (texts(b, key)?, ints(b, "events")?, ints(b, "detected")?);
        for (i, k) in keys.into_iter().enumerate() {
            out.insert(
                k,
                Breakdown {
                    point: counts(b, i)?,
                    events: events[i],
                    detected: detected[i],
                },
            );
        }
    }
    Ok(out)
}
