//! The models a session can score with, by name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use tads_model::{ModelArtifact, ModelGroup, Scorer};
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

/// A group of models (see [`tads_model::group`]) as the registry knows it; its members are
/// ordinary models named `<name>/<value>`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// The column whose values select a member.
    pub group_by: String,
    /// The members' features.
    pub features: Vec<String>,
    /// The group's fingerprint.
    pub fingerprint: String,
    /// Number of members.
    pub members: usize,
    /// Group values that got no model.
    pub skipped: usize,
}

/// What [`ModelRegistry::load_model`] found under a name.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// A single model (`model.json`).
    Single(Arc<LoadedModel>),
    /// A group of models (`group.json`).
    Group(Arc<GroupInfo>),
}

/// Models by name. Shared by every TADS function of a session; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct ModelRegistry {
    models: Arc<RwLock<BTreeMap<String, Arc<LoadedModel>>>>,
    groups: Arc<RwLock<BTreeMap<String, Arc<GroupInfo>>>>,
    /// The models and groups as loaded from a location (unchanged since), and where from.
    persisted: Arc<RwLock<BTreeMap<String, String>>>,
}

/// A model or group of a registry by name and fingerprint: what a cluster's processes load
/// to score with the same models (see [`ModelRegistry::entries`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The model's or group's name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Whether it is a group (`group.json`) rather than a model (`model.json`).
    pub group: bool,
    /// The location it was loaded from.
    pub location: String,
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
        self.mark(&loaded.artifact.name, None);
        Ok(loaded)
    }

    /// Records where `name` was loaded from (`None`: it was made in this process).
    fn mark(&self, name: &str, location: Option<&Location>) {
        if let Ok(mut p) = self.persisted.write() {
            match location {
                Some(l) => p.insert(name.to_string(), l.to_string()),
                None => p.remove(name),
            };
        }
    }

    /// Where `name` was loaded from, if it was.
    fn loaded_from(&self, name: &str) -> Option<String> {
        self.persisted.read().ok()?.get(name).cloned()
    }

    /// Adds (or replaces) a checked group and its members.
    pub fn insert_group(&self, group: ModelGroup) -> Result<Arc<GroupInfo>> {
        group.validate().map_err(|e| Error::Model(e.to_string()))?;
        let info = Arc::new(GroupInfo {
            name: group.name.clone(),
            group_by: group.group_by.clone(),
            features: group.features.clone(),
            fingerprint: group.fingerprint.clone(),
            members: group.members.len(),
            skipped: group.skipped.len(),
        });
        for m in group.members {
            self.insert(m)?;
        }
        self.groups
            .write()
            .map_err(|_| Error::Model("model registry lock poisoned".into()))?
            .insert(info.name.clone(), Arc::clone(&info));
        self.mark(&info.name, None);
        Ok(info)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<Arc<GroupInfo>> {
        self.groups.read().ok()?.get(name).cloned()
    }

    /// Whether `name` is `<group>/<value>` of a known group (a member, trained or not).
    pub fn is_group_member_name(&self, name: &str) -> bool {
        name.split_once('/')
            .is_some_and(|(group, _)| self.group(group).is_some())
    }

    /// Whether `other` is this same registry (not an equal copy).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.models, &other.models)
    }

    /// The models and groups as loaded from a location, by name, fingerprint and location,
    /// without the members of a group.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .names()
            .into_iter()
            .filter(|n| !self.is_group_member_name(n))
            .filter_map(|n| Some((self.get(&n)?, self.loaded_from(&n)?)))
            .map(|(m, location)| Entry {
                name: m.artifact.name.clone(),
                fingerprint: m.artifact.fingerprint.clone(),
                group: false,
                location,
            })
            .collect();
        if let Ok(groups) = self.groups.read() {
            out.extend(groups.values().filter_map(|g| {
                Some(Entry {
                    name: g.name.clone(),
                    fingerprint: g.fingerprint.clone(),
                    group: true,
                    location: self.loaded_from(&g.name)?,
                })
            }));
        }
        out
    }

    /// The models that exist in this process only (inserted, not loaded from a location),
    /// without the members of a group.
    pub fn unsaved(&self) -> Vec<Arc<LoadedModel>> {
        self.names()
            .into_iter()
            .filter(|n| !self.is_group_member_name(n) && self.loaded_from(n).is_none())
            .filter_map(|n| self.get(&n))
            .collect()
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

    /// "unknown model `x` (known: a, b)" for error messages: single models and groups, not
    /// every member of a group.
    pub fn unknown(&self, name: &str) -> String {
        let mut names: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !self.is_group_member_name(n))
            .collect();
        if let Ok(groups) = self.groups.read() {
            names.extend(
                groups
                    .keys()
                    .map(|g| format!("{g}/<{}>", groups[g].group_by)),
            );
        }
        names.sort();
        if names.is_empty() {
            return format!("unknown model `{name}` (no models are loaded)");
        }
        let more = names.len().saturating_sub(10);
        names.truncate(10);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("unknown model `{name}` (known: {}{tail})", names.join(", "))
    }

    /// Loads `<location>/<name>/model.json`, or else `<location>/<name>/group.json`; a missing
    /// or bad file is an error naming it.
    pub async fn load_model(&self, location: &Location, name: &str) -> Result<Loaded> {
        ModelArtifact::check_name(name).map_err(|e| Error::Model(e.to_string()))?;
        if let Some(model) = self
            .load_file::<ModelArtifact>(location, &format!("{name}/model.json"))
            .await?
        {
            return Ok(Loaded::Single(model));
        }
        if let Some(group) = self
            .load_file::<ModelGroup>(location, &format!("{name}/group.json"))
            .await?
        {
            return Ok(Loaded::Group(group));
        }
        Err(Error::Model(format!(
            "{location}{name}/: no such model (no model.json or group.json; train it with `tads train --model {name}`)"
        )))
    }

    /// Loads one `model.json` or `group.json` at `rel`, checking its name against its
    /// directory; `None` if there is no such file.
    async fn load_file<T: FromArtifactFile>(
        &self,
        location: &Location,
        rel: &str,
    ) -> Result<Option<T::Out>> {
        let Some(bytes) = location.get_opt(rel).await? else {
            return Ok(None);
        };
        let dir = rel.split('/').next().unwrap_or_default();
        let out = T::load(self, &bytes, dir)
            .map_err(|e| Error::Model(format!("{location}{rel}: {e}")))?;
        self.mark(dir, Some(location));
        Ok(Some(out))
    }

    /// Loads every `<name>/model.json` and `<name>/group.json` below `location` and returns
    /// how many it loaded; a bad file is an error naming it.
    pub async fn load_dir(&self, location: &Location) -> Result<usize> {
        let mut count = 0;
        for object in location.list_all().await? {
            let Some(rel) = location.relative(&object.location) else {
                continue;
            };
            let parts: Vec<&str> = rel.split('/').collect();
            let found = match parts.as_slice() {
                [_, "model.json"] => self
                    .load_file::<ModelArtifact>(location, &rel)
                    .await?
                    .is_some(),
                [_, "group.json"] => self
                    .load_file::<ModelGroup>(location, &rel)
                    .await?
                    .is_some(),
                _ => false,
            };
            count += usize::from(found);
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
            Field::new("scoring_space", DataType::Boolean, false),
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
                Arc::new(BooleanArray::from_iter(
                    models
                        .iter()
                        .map(|m| Some(m.artifact.scoring_space.is_some())),
                )),
            ],
        )
        .map_err(datafusion::error::DataFusionError::from)?;
        Ok(MemTable::try_new(schema, vec![vec![batch]])?)
    }
}

/// A model file kind the registry can load.
trait FromArtifactFile {
    type Out;
    fn load(registry: &ModelRegistry, bytes: &[u8], dir: &str) -> Result<Self::Out, String>;
}

impl FromArtifactFile for ModelArtifact {
    type Out = Arc<LoadedModel>;
    fn load(registry: &ModelRegistry, bytes: &[u8], dir: &str) -> Result<Self::Out, String> {
        let artifact = ModelArtifact::from_json(bytes).map_err(|e| e.to_string())?;
        if artifact.name != dir {
            return Err(format!(
                "name is `{}` but the directory is `{dir}`",
                artifact.name
            ));
        }
        registry.insert(artifact).map_err(|e| e.to_string())
    }
}

impl FromArtifactFile for ModelGroup {
    type Out = Arc<GroupInfo>;
    fn load(registry: &ModelRegistry, bytes: &[u8], dir: &str) -> Result<Self::Out, String> {
        let group = ModelGroup::from_json(bytes).map_err(|e| e.to_string())?;
        if group.name != dir {
            return Err(format!(
                "name is `{}` but the directory is `{dir}`",
                group.name
            ));
        }
        registry.insert_group(group).map_err(|e| e.to_string())
    }
}
