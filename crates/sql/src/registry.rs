//! The models a session can score with, by name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use tads_model::{ModelArtifact, Scorer};
use tads_store::Location;

use crate::{Error, Result};

/// A model ready for scoring.
#[derive(Debug)]
pub struct LoadedModel {
    /// The artifact as read.
    pub artifact: ModelArtifact,
    /// Its scoring coefficients.
    pub scorer: Scorer,
}

/// Models by name. Shared by every TADS function of a session; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct ModelRegistry {
    models: Arc<RwLock<BTreeMap<String, Arc<LoadedModel>>>>,
}

impl ModelRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a checked model.
    pub fn insert(&self, artifact: ModelArtifact) -> Result<Arc<LoadedModel>> {
        artifact
            .validate()
            .map_err(|e| Error::Model(e.to_string()))?;
        let loaded = Arc::new(LoadedModel {
            scorer: Scorer::new(&artifact),
            artifact,
        });
        self.models
            .write()
            .map_err(|_| Error::Model("model registry lock poisoned".into()))?
            .insert(loaded.artifact.name.clone(), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Whether `other` is this same registry (not an equal copy).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.models, &other.models)
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models.read().ok()?.get(name).cloned()
    }

    /// Every model name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// "unknown model `x` (known: a, b)" for error messages.
    pub fn unknown(&self, name: &str) -> String {
        let names = self.names();
        if names.is_empty() {
            format!("unknown model `{name}` (no models are loaded)")
        } else {
            format!("unknown model `{name}` (known: {})", names.join(", "))
        }
    }

    /// Loads every `<name>/model.json` below `location`; a bad file is an error naming it.
    pub async fn load_dir(&self, location: &Location) -> Result<usize> {
        let mut count = 0;
        for object in location.list_all().await? {
            let Some(rel) = location.relative(&object.location) else {
                continue;
            };
            let parts: Vec<&str> = rel.split('/').collect();
            if parts.len() != 2 || parts[1] != "model.json" {
                continue;
            }
            let bytes = location
                .get_opt(&rel)
                .await?
                .ok_or_else(|| Error::Model(format!("{location}{rel}: vanished while loading")))?;
            let artifact = ModelArtifact::from_json(&bytes)
                .map_err(|e| Error::Model(format!("{location}{rel}: {e}")))?;
            if artifact.name != parts[0] {
                return Err(Error::Model(format!(
                    "{location}{rel}: name is `{}` but the directory is `{}`",
                    artifact.name, parts[0]
                )));
            }
            self.insert(artifact)?;
            count += 1;
        }
        Ok(count)
    }

    /// The registry as a table: one row per model.
    pub fn table(&self) -> Result<MemTable> {
        let models: Vec<Arc<LoadedModel>> =
            self.names().iter().filter_map(|n| self.get(n)).collect();
        let text = |f: &dyn Fn(&ModelArtifact) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                models.iter().map(|m| f(&m.artifact)),
            ))
        };
        let opt = |f: &dyn Fn(&ModelArtifact) -> Option<f64>| -> ArrayRef {
            Arc::new(Float64Array::from_iter(
                models.iter().map(|m| f(&m.artifact)),
            ))
        };
        let count = |f: &dyn Fn(&ModelArtifact) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(
                models.iter().map(|m| f(&m.artifact)),
            ))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("fingerprint", DataType::Utf8, false),
            Field::new("features", DataType::Utf8, false),
            Field::new("d", DataType::UInt64, false),
            Field::new("k", DataType::UInt64, false),
            Field::new("spe_limit_99", DataType::Float64, true),
            Field::new("spe_limit_999", DataType::Float64, true),
            Field::new("t2_limit_99", DataType::Float64, true),
            Field::new("rows_used", DataType::UInt64, false),
            Field::new("data_uri", DataType::Utf8, false),
            Field::new("created_at", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                text(&|m| m.name.clone()),
                text(&|m| m.fingerprint.clone()),
                text(&|m| m.features.join(",")),
                count(&|m| m.dims() as u64),
                count(&|m| m.pca.k as u64),
                opt(&|m| m.thresholds.spe_jm_99),
                opt(&|m| m.thresholds.spe_jm_999),
                opt(&|m| m.thresholds.t2_99),
                count(&|m| m.training.rows_used),
                text(&|m| m.training.data_uri.clone()),
                text(&|m| m.training.created_at.to_rfc3339()),
            ],
        )
        .map_err(datafusion::error::DataFusionError::from)?;
        Ok(MemTable::try_new(schema, vec![vec![batch]])?)
    }
}
