//! `tads_help()`: every TADS function with its description, syntax, arguments and an example,
//! as a table; `tads_help('pca_score')` for one. The REPL's help for TADS functions.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Documentation, Expr};

use super::{aggregate_udfs, scalar_udfs, window_udfs};
use crate::registry::ModelRegistry;

/// A function's name, kind (scalar, aggregate, window, table) and documentation.
type Entry = (String, &'static str, Documentation);

/// The `tads_help` table function.
#[derive(Debug)]
pub struct TadsHelp {
    /// Every TADS function, by name.
    entries: Vec<Entry>,
}

impl TadsHelp {
    /// Help on every function of [`super::register_all`].
    pub fn new(registry: &ModelRegistry) -> Self {
        let mut entries = Vec::new();
        for f in scalar_udfs(registry) {
            if let Some(d) = f.documentation() {
                entries.push((f.name().to_string(), "scalar", d.clone()));
            }
        }
        for f in aggregate_udfs() {
            if let Some(d) = f.documentation() {
                entries.push((f.name().to_string(), "aggregate", d.clone()));
            }
        }
        for f in window_udfs() {
            if let Some(d) = f.documentation() {
                entries.push((f.name().to_string(), "window", d.clone()));
            }
        }
        entries.push((
            "tads_help".into(),
            "table",
            super::common::doc(
                "Every TADS function with its description, syntax, arguments and an example; with a name, that function only.",
                "tads_help([name])",
                "SELECT name, syntax FROM tads_help(); SELECT * FROM tads_help('pca_score')",
            )
            .build(),
        ));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Self { entries }
    }
}

impl TableFunctionImpl for TadsHelp {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let wanted = match args.exprs() {
            [] => None,
            [Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)] => {
                Some(s.to_lowercase())
            }
            _ => return plan_err!("tads_help: expects no argument or a function name in quotes"),
        };
        let rows: Vec<_> = self
            .entries
            .iter()
            .filter(|(n, _, _)| wanted.as_ref().is_none_or(|w| n == w))
            .collect();
        if let (Some(w), true) = (&wanted, rows.is_empty()) {
            let names: Vec<&str> = self.entries.iter().map(|e| e.0.as_str()).collect();
            return plan_err!(
                "tads_help: no TADS function `{w}` (there are: {})",
                names.join(", ")
            );
        }
        let schema = Arc::new(Schema::new(
            [
                "name",
                "kind",
                "description",
                "syntax",
                "arguments",
                "example",
            ]
            .map(|n| Field::new(n, DataType::Utf8, true))
            .to_vec(),
        ));
        let col = |f: &dyn Fn(&Entry) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(|e| f(e)).collect::<StringArray>())
        };
        let columns = vec![
            col(&|e| Some(e.0.clone())),
            col(&|e| Some(e.1.to_string())),
            col(&|e| Some(e.2.description.clone())),
            col(&|e| Some(e.2.syntax_example.clone())),
            col(&|e| {
                e.2.arguments.as_ref().map(|a| {
                    a.iter()
                        .map(|(n, d)| format!("{n}: {d}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            }),
            col(&|e| e.2.sql_example.clone()),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
