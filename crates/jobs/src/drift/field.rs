//! `tads_drift_field(shift, 'm0')`: one metric's shift out of [`super::ShiftFunction`]'s struct.
//!
//! `get_field` would do the same, but DataFusion 55's optimizer moves a `get_field` of a column
//! towards the scan, into the projection that computes the struct: the common subexpression
//! `tads_drift_shift(key, time)`, computed once per row, became one call per metric again (eight
//! lookups of every row's shift for a model of eight metrics). This function stays where it is
//! written, so the shift is computed once per row and each field is taken without a copy.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function's name.
pub(crate) const FIELD_FUNCTION: &str = "tads_drift_field";

/// See the module.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct FieldFunction {
    signature: Signature,
}

impl FieldFunction {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for FieldFunction {
    fn name(&self) -> &str {
        FIELD_FUNCTION
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [shift, name] = args.args.as_slice() else {
            return exec_err!("{FIELD_FUNCTION}: expects (shift, field name)");
        };
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))) = name else {
            return exec_err!("{FIELD_FUNCTION}: the field name must be a text literal");
        };
        let shift = shift.to_array(args.number_rows)?;
        let Some(field) = shift.as_struct_opt().and_then(|s| s.column_by_name(name)) else {
            return exec_err!(
                "{FIELD_FUNCTION}: no field `{name}` in {}",
                shift.data_type()
            );
        };
        if field.data_type() != &DataType::Float64 {
            return exec_err!("{FIELD_FUNCTION}: field `{name}` is not a DOUBLE");
        }
        Ok(ColumnarValue::Array(Arc::clone(field)))
    }
}
