//! The drift baseline's shift function on a Ballista cluster: it holds each key's shifts,
//! computed in the client's process, so it travels whole with the plan (a
//! [`tads_cluster::codec::Carrier`]), in a compact binary form: every number as its 8 bytes, so
//! every process shifts every row by exactly what the client computed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use tads_cluster::codec::Carrier;

use super::{Baselines, ShiftFunction};

/// The carrier of [`ShiftFunction`].
pub(crate) const CARRIER: Carrier = Carrier {
    name: "tads-drift-shift-2",
    encode,
    decode,
};

/// Per key, values per hour or day.
type Series = HashMap<String, BTreeMap<i64, Vec<f64>>>;

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_floats(out: &mut Vec<u8>, values: &[f64]) {
    put_len(out, values.len());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    put_len(out, key.len());
    out.extend_from_slice(key.as_bytes());
}

fn put_series(out: &mut Vec<u8>, series: &Series) {
    put_len(out, series.len());
    for (key, values) in series {
        put_key(out, key);
        put_len(out, values.len());
        for (at, v) in values {
            out.extend_from_slice(&at.to_le_bytes());
            put_floats(out, v);
        }
    }
}

/// Reads what the `put_*` functions wrote.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(DataFusionError::Plan(
                "the drift baseline's shifts are cut short".into(),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.u64()? as usize;
        // Each item takes at least one byte: a length beyond what is left is corrupt.
        if n > self.0.len() {
            return Err(DataFusionError::Plan(
                "the drift baseline's shifts are corrupt".into(),
            ));
        }
        Ok(n)
    }

    fn floats(&mut self) -> Result<Vec<f64>> {
        let n = self.len()?;
        (0..n).map(|_| Ok(f64::from_bits(self.u64()?))).collect()
    }

    fn key(&mut self) -> Result<String> {
        let n = self.len()?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn series(&mut self) -> Result<Series> {
        let keys = self.len()?;
        let mut out = HashMap::with_capacity(keys);
        for _ in 0..keys {
            let key = self.key()?;
            let n = self.len()?;
            let mut values = BTreeMap::new();
            for _ in 0..n {
                let at = self.u64()? as i64;
                values.insert(at, self.floats()?);
            }
            out.insert(key, values);
        }
        Ok(out)
    }
}

fn encode(udf: &ScalarUDF) -> Option<Result<Vec<u8>>> {
    let f = udf.inner().downcast_ref::<ShiftFunction>()?;
    let b = match f.baselines.read() {
        Ok(b) => b,
        Err(_) => {
            return Some(Err(DataFusionError::Execution(
                "a scoring task failed".into(),
            )));
        }
    };
    let mut out = Vec::new();
    put_len(&mut out, f.fields.len());
    put_series(&mut out, &b.shifts);
    put_series(&mut out, &b.hourly);
    put_len(&mut out, b.profiles.len());
    for (key, hours) in &b.profiles {
        put_key(&mut out, key);
        put_len(&mut out, hours.len());
        for h in hours.iter() {
            put_floats(&mut out, h);
        }
    }
    Some(Ok(out))
}

fn decode(bytes: &[u8]) -> Result<ScalarUDF> {
    let mut r = Reader(bytes);
    let width = r.u64()? as usize;
    let shifts = r.series()?;
    let hourly = r.series()?;
    let keys = r.len()?;
    let mut profiles = HashMap::with_capacity(keys);
    for _ in 0..keys {
        let key = r.key()?;
        let n = r.len()?;
        let hours = (0..n).map(|_| r.floats()).collect::<Result<Vec<_>>>()?;
        profiles.insert(key, Arc::new(hours));
    }
    let baselines = Baselines {
        shifts,
        hourly,
        profiles,
        ..Baselines::default()
    };
    Ok(ShiftFunction::udf(
        Arc::new(std::sync::RwLock::new(baselines)),
        width,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shifts_travel_exactly() {
        let mut b = Baselines::default();
        b.shifts.insert(
            "h1".into(),
            BTreeMap::from([(20_000, vec![0.1, -2.5e-300])]),
        );
        b.hourly.insert(
            "h2".into(),
            BTreeMap::from([(480_000, vec![f64::NAN, 3.0])]),
        );
        b.profiles
            .insert("h1".into(), Arc::new(vec![vec![1.0 / 3.0, 0.0]; 24]));
        let udf = ShiftFunction::udf(Arc::new(std::sync::RwLock::new(b)), 2);
        let bytes = encode(&udf).unwrap().unwrap();
        let back = decode(&bytes).unwrap();
        let f = back.inner().downcast_ref::<ShiftFunction>().unwrap();
        assert_eq!(f.fields.len(), 2);
        let mut out = [0.0; 2];
        let baselines = f.baselines.read().unwrap();
        baselines.shifts_into("h1", 20_000 * 24 + 5, &mut out);
        assert_eq!(out, [0.1 + 1.0 / 3.0, -2.5e-300]);
        baselines.shifts_into("h2", 480_000, &mut out);
        assert!(out[0].is_nan() && out[1] == 3.0);
        // Cut short: an error, not a panic.
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        // Any other function is not this carrier's.
        let other = ScalarUDF::new_from_impl(tads_sql::functions::ModelFunction::new(
            tads_sql::functions::ModelScore::All,
            tads_sql::ModelRegistry::new(),
        ));
        assert!(encode(&other).is_none());
    }
}
