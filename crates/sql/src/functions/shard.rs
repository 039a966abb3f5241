//! `shard_of(key, n)`: which of `n` shards a key belongs to, stable across runs, machines and
//! TADS versions, so that `tads score --shard i/n` jobs on different machines split a fleet
//! without overlap.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, UInt32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

use super::common::doc;

/// FNV-1a, 64 bits, of `bytes`: a fixed, documented hash (std's hasher may change between
/// releases, and shards must not).
pub use tads_model::hash::fnv1a64;

/// The shard (1 to `n`) of a key's text.
pub fn shard_of(key: &str, n: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(n.max(1))) as u32 + 1
}

/// `shard_of(key, n)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ShardOf {
    signature: Signature,
}

impl Default for ShardOf {
    fn default() -> Self {
        Self {
            signature: super::common::any_with_example_of(
                datafusion::logical_expr::TypeSignature::Any(2),
                vec![DataType::Utf8, DataType::Int64],
            ),
        }
    }
}

static DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
    doc(
        "The shard, from 1 to n, of a key: FNV-1a (64 bit) of the key's text modulo n, plus 1. \
         Stable across runs and machines; `tads score --shard i/n` keeps the rows whose \
         shard_of(host_id, n) is i. NULL for a NULL key.",
        "shard_of(key, n)",
        "SELECT host_id, shard_of(host_id, 4) FROM telemetry GROUP BY host_id",
    )
    .with_argument("key", "Any value; its text form is hashed.")
    .with_argument("n", "The number of shards, a positive integer literal.")
    .build()
});

impl ScalarUDFImpl for ShardOf {
    fn name(&self) -> &str {
        "shard_of"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !arg_types[1].is_integer() {
            return plan_err!(
                "shard_of: n must be a positive integer, got {}",
                arg_types[1]
            );
        }
        Ok(DataType::UInt32)
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = match &args.args[1] {
            ColumnarValue::Scalar(v) => v.cast_to(&DataType::Int64)?,
            ColumnarValue::Array(_) => return exec_err!("shard_of: n must be a literal"),
        };
        let n = match n {
            ScalarValue::Int64(Some(n)) if n > 0 && n <= i64::from(u32::MAX) => n as u32,
            other => return exec_err!("shard_of: n must be a positive integer, got {other}"),
        };
        let keys = args.args[0].to_array(args.number_rows)?;
        let text = cast(&keys, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: UInt32Array = text.iter().map(|k| k.map(|k| shard_of(k, n))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_cover_1_to_n_and_split_keys_evenly() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let s = shard_of(&format!("host-{i:05}"), 4);
            assert!((1..=4).contains(&s));
            counts[s as usize - 1] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(shard_of("anything", 1), 1);
    }
}
