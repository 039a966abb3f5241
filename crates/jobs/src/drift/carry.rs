//! The drift baseline's shift function on a Ballista cluster: it holds each key's shifts,
//! computed in the client's process, so it travels whole with the plan (a
//! [`tads_cluster::codec::Carrier`]). Numbers travel as their bits, so every process shifts
//! every row by exactly what the client computed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use serde::{Deserialize, Serialize};
use tads_cluster::codec::Carrier;

use super::{Baselines, ShiftFunction};

/// The carrier of [`ShiftFunction`].
pub(crate) const CARRIER: Carrier = Carrier {
    name: "tads-drift-shift-1",
    encode,
    decode,
};

/// Per key, values per hour or day, as bits.
type Bits = Vec<(String, Vec<(i64, Vec<u64>)>)>;

/// What travels: the shifts, the hourly shifts and the daily cycles, and the metrics' count.
#[derive(Serialize, Deserialize)]
struct Wire {
    width: usize,
    shifts: Bits,
    hourly: Bits,
    profiles: Vec<(String, Vec<Vec<u64>>)>,
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn floats(bits: &[u64]) -> Vec<f64> {
    bits.iter().map(|&b| f64::from_bits(b)).collect()
}

fn to_wire(map: &HashMap<String, BTreeMap<i64, Vec<f64>>>) -> Bits {
    map.iter()
        .map(|(k, m)| (k.clone(), m.iter().map(|(t, v)| (*t, bits(v))).collect()))
        .collect()
}

fn from_wire(wire: Bits) -> HashMap<String, BTreeMap<i64, Vec<f64>>> {
    wire.into_iter()
        .map(|(k, m)| (k, m.into_iter().map(|(t, v)| (t, floats(&v))).collect()))
        .collect()
}

fn encode(udf: &ScalarUDF) -> Option<Result<Vec<u8>>> {
    let f = udf.inner().downcast_ref::<ShiftFunction>()?;
    let b = &f.baselines;
    let wire = Wire {
        width: f.fields.len(),
        shifts: to_wire(&b.shifts),
        hourly: to_wire(&b.hourly),
        profiles: b
            .profiles
            .iter()
            .map(|(k, p)| (k.clone(), p.iter().map(|h| bits(h)).collect()))
            .collect(),
    };
    Some(serde_json::to_vec(&wire).map_err(|e| DataFusionError::External(Box::new(e))))
}

fn decode(bytes: &[u8]) -> Result<ScalarUDF> {
    let wire: Wire = serde_json::from_slice(bytes)
        .map_err(|e| DataFusionError::Plan(format!("the drift baseline's shifts: {e}")))?;
    let baselines = Baselines {
        shifts: from_wire(wire.shifts),
        hourly: from_wire(wire.hourly),
        profiles: wire
            .profiles
            .into_iter()
            .map(|(k, p)| (k, Arc::new(p.iter().map(|h| floats(h)).collect())))
            .collect(),
        ..Baselines::default()
    };
    Ok(ShiftFunction::udf(Arc::new(baselines), wire.width))
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
        let udf = ShiftFunction::udf(Arc::new(b), 2);
        let bytes = encode(&udf).unwrap().unwrap();
        let back = decode(&bytes).unwrap();
        let f = back.inner().downcast_ref::<ShiftFunction>().unwrap();
        assert_eq!(f.fields.len(), 2);
        let mut out = [0.0; 2];
        f.baselines.shifts_into("h1", 20_000 * 24 + 5, &mut out);
        assert_eq!(out, [0.1 + 1.0 / 3.0, -2.5e-300]);
        f.baselines.shifts_into("h2", 480_000, &mut out);
        assert!(out[0].is_nan() && out[1] == 3.0);
        // Any other function is not this carrier's.
        let other = ScalarUDF::new_from_impl(tads_sql::functions::ModelFunction::new(
            tads_sql::functions::ModelScore::All,
            tads_sql::ModelRegistry::new(),
        ));
        assert!(encode(&other).is_none());
    }
}
