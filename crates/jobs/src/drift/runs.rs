//! A batch's rows in runs of one key and hour: the unit the drift shift is looked up by.
//!
//! Keys are compared by their dictionary codes when the key column is a dictionary (as
//! generated and most Parquet string keys are read), so a batch's keys are not turned into
//! strings row by row; any other key type is cast to text once per batch. The alert pass's
//! walk over files in time order finds each row's key state by the same codes ([`Keys`]).

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::Result as DfResult;

/// Microseconds in an hour.
const HOUR_US: i64 = 3_600_000_000;

/// The key column of a batch, comparable row against row.
pub(crate) enum Keys {
    /// Dictionary codes (in range), the rows' nulls and the dictionary's values as text.
    Codes {
        codes: Vec<usize>,
        nulls: Option<NullBuffer>,
        values: StringArray,
    },
    /// Any other key, as text.
    Text(StringArray),
}

impl Keys {
    /// The keys of a batch's key column: a dictionary's codes, or any other type as text.
    pub(crate) fn new(key: &ArrayRef) -> DfResult<Self> {
        if let Some(dict) = key.as_any_dictionary_opt() {
            let values = cast(dict.values(), &DataType::Utf8)?
                .as_string::<i32>()
                .clone();
            return Ok(Keys::Codes {
                codes: dict.normalized_keys(),
                nulls: key.logical_nulls(),
                values,
            });
        }
        Ok(Keys::Text(
            cast(key, &DataType::Utf8)?.as_string::<i32>().clone(),
        ))
    }

    /// Whether row `i` has no key.
    pub(crate) fn is_null(&self, i: usize) -> bool {
        match self {
            Keys::Codes { nulls, .. } => nulls.as_ref().is_some_and(|n| n.is_null(i)),
            Keys::Text(a) => a.is_null(i),
        }
    }

    /// Whether non-null row `a`'s key equals row `b`'s (false when `b` is null).
    pub(crate) fn same(&self, a: usize, b: usize) -> bool {
        match self {
            Keys::Codes { codes, .. } => !self.is_null(b) && codes[a] == codes[b],
            Keys::Text(t) => t.is_valid(b) && t.value(a) == t.value(b),
        }
    }

    /// The key of non-null row `i`.
    pub(crate) fn text(&self, i: usize) -> &str {
        match self {
            Keys::Codes { codes, values, .. } => values.value(codes[i]),
            Keys::Text(t) => t.value(i),
        }
    }

    /// The dictionary's size (the codes are below it), or 0 for keys as text.
    pub(crate) fn codes(&self) -> usize {
        match self {
            Keys::Codes { values, .. } => values.len(),
            Keys::Text(_) => 0,
        }
    }

    /// Row `i`'s dictionary code (the same code is the same key within the batch), or None
    /// for keys as text.
    pub(crate) fn code(&self, i: usize) -> Option<usize> {
        match self {
            Keys::Codes { codes, .. } => Some(codes[i]),
            Keys::Text(_) => None,
        }
    }
}

/// What a batch's keys map to, looked up once per dictionary code, or once per run of one key
/// when the keys are text: not once per row.
pub(crate) struct PerKey<T> {
    by_code: Vec<Option<T>>,
    /// The last row looked up and what it found.
    last: Option<(usize, T)>,
}

impl<T: Copy> PerKey<T> {
    /// For the rows of `keys`.
    pub(crate) fn new(keys: &Keys) -> Self {
        Self {
            by_code: vec![None; keys.codes()],
            last: None,
        }
    }

    /// What non-null row `i`'s key maps to, `lookup(key)` when not known yet.
    pub(crate) fn get(&mut self, keys: &Keys, i: usize, lookup: impl FnOnce(&str) -> T) -> T {
        let found = match keys.code(i) {
            Some(code) => *self.by_code[code].get_or_insert_with(|| lookup(keys.text(i))),
            None => match self.last {
                Some((row, found)) if keys.same(row, i) => found,
                _ => lookup(keys.text(i)),
            },
        };
        self.last = Some((i, found));
        found
    }
}

/// Calls `run(rows, key and hour)` for each maximal run of rows with one key and one hour, in
/// order; a row without a key or a time is a run of its own, given `None`.
pub(super) fn for_each_run(
    key: &ArrayRef,
    time: &ArrayRef,
    mut run: impl FnMut(usize, Option<(&str, i64)>),
) -> DfResult<()> {
    let keys = Keys::new(key)?;
    let times = cast(time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let n = times.len();
    let mut start = 0;
    while start < n {
        if keys.is_null(start) || times.is_null(start) {
            run(1, None);
            start += 1;
            continue;
        }
        let hour = times.value(start).div_euclid(HOUR_US);
        // A time in the same hour lies less than an hour after the hour's start: no division
        // per row (in 128 bits, so also the hours at the ends of the range are exact).
        let from = i128::from(hour) * i128::from(HOUR_US);
        let mut end = start + 1;
        while end < n
            && keys.same(start, end)
            && times.is_valid(end)
            && (0..i128::from(HOUR_US)).contains(&(i128::from(times.value(end)) - from))
        {
            end += 1;
        }
        run(end - start, Some((keys.text(start), hour)));
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{DictionaryArray, Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Int32Type;

    use super::*;

    fn runs(key: ArrayRef, time: ArrayRef) -> Vec<(usize, Option<(String, i64)>)> {
        let mut out = Vec::new();
        for_each_run(&key, &time, |n, k| {
            out.push((n, k.map(|(s, h)| (s.to_string(), h))))
        })
        .unwrap();
        out
    }

    #[test]
    fn dictionary_and_text_keys_give_the_same_runs() {
        let h = HOUR_US;
        let time: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(0),
                Some(h - 1),
                Some(h),
                Some(h + 1),
                None,
                Some(h + 2),
                Some(h + 3),
                Some(-1),
            ])
            .with_timezone("UTC"),
        );
        let names = [
            Some("a"),
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("b"),
            None,
            Some("b"),
        ];
        let text: ArrayRef = Arc::new(StringArray::from(names.to_vec()));
        // A dictionary may repeat a value (codes 1 and 2 are both "b").
        let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::new(
            vec![
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                None,
                Some(2),
            ]
            .into(),
            Arc::new(StringArray::from(vec!["a", "b", "b"])),
        ));
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(7),
            Some(7),
            Some(7),
            Some(8),
            Some(8),
            Some(8),
            None,
            Some(8),
        ]));
        // The runs, with the text of the keys called a and b above.
        let expected = |a: &str, b: &str| {
            let some = |n, k: &str, h| (n, Some((k.to_string(), h)));
            vec![
                some(2, a, 0),
                some(1, a, 1),
                some(1, b, 1),
                (1, None),
                some(1, b, 1),
                (1, None),
                some(1, b, -1),
            ]
        };
        assert_eq!(runs(text, time.clone()), expected("a", "b"));
        assert_eq!(runs(dict, time.clone()), expected("a", "b"));
        assert_eq!(runs(numbers, time), expected("7", "8"));
    }

    #[test]
    fn hours_at_the_ends_of_the_time_range_are_runs() {
        let time: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            i64::MIN,
            i64::MIN + 1,
            i64::MAX - 1,
            i64::MAX,
        ]));
        let key: ArrayRef = Arc::new(StringArray::from(vec!["a"; 4]));
        let (first, last) = (i64::MIN.div_euclid(HOUR_US), i64::MAX.div_euclid(HOUR_US));
        let a = |n, h| (n, Some(("a".to_string(), h)));
        assert_eq!(runs(key, time), vec![a(2, first), a(2, last)]);
    }
}
