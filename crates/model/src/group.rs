//! `group.json`: one model per value of a column (per host, per region), trained together.
//!
//! A group called `hosts`, grouped by `host_id`, holds a member model per host, named
//! `hosts/<host_id>`; the scoring functions pick a row's member by that name
//! (`pca_score(concat('hosts/', host_id), …)`), and a row of a value that has no member (a host
//! with too few training rows, or new since) scores NULL.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::{ModelArtifact, SCHEMA_VERSION, parse_json, pretty_json, sha256_tag};
use crate::{Error, Result};

/// A group value that got no model, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedMember {
    /// The group value.
    pub key: String,
    /// Rows it had.
    pub rows: u64,
    /// Why it has no model.
    pub reason: String,
}

/// A group of models, one per value of `group_by`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroup {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `tads-model-group`.
    pub kind: String,
    /// The group's name (its directory under the models location).
    pub name: String,
    /// The column whose values select a member.
    pub group_by: String,
    /// Feature names, the same for every member.
    pub features: Vec<String>,
    /// The members, named `<name>/<value>`, sorted by name.
    pub members: Vec<ModelArtifact>,
    /// Values that got no model.
    pub skipped: Vec<SkippedMember>,
    /// Rows read over all groups (after the filter).
    pub rows_seen: u64,
    /// URI of the training data.
    pub data_uri: String,
    /// The SQL predicate applied, if any.
    pub filter: Option<String>,
    /// When training finished.
    pub created_at: DateTime<Utc>,
    /// `sha256:` and the hex SHA-256 of the members' fingerprints, in order.
    pub fingerprint: String,
}

impl ModelGroup {
    /// The member name of a group value.
    pub fn member_name(name: &str, key: &str) -> String {
        format!("{name}/{key}")
    }

    /// The group value of a member.
    pub fn key_of<'a>(&self, member: &'a ModelArtifact) -> &'a str {
        member
            .name
            .strip_prefix(&self.name)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&member.name)
    }

    /// The fingerprint of the members.
    pub fn compute_fingerprint(&self) -> String {
        let mut text = self.group_by.clone();
        for m in &self.members {
            text.push('\n');
            text.push_str(&m.fingerprint);
        }
        sha256_tag(text.as_bytes())
    }

    /// Sets the fingerprint (call after the last change).
    pub fn seal(mut self) -> Self {
        self.fingerprint = self.compute_fingerprint();
        self
    }

    /// The pretty JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        pretty_json(self)
    }

    /// Parses and checks a `group.json`; errors name the bad field (and member).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let group: Self = parse_json(bytes, "group.json")?;
        group.validate()?;
        Ok(group)
    }

    /// Checks every field and every member.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::Invalid {
                field: field.to_string(),
                message,
            })
        };
        if self.schema_version != SCHEMA_VERSION {
            return bad(
                "schema_version",
                format!(
                    "is {}, this TADS reads {SCHEMA_VERSION}",
                    self.schema_version
                ),
            );
        }
        if self.kind != "tads-model-group" {
            return bad("kind", format!("is `{}`, not tads-model-group", self.kind));
        }
        ModelArtifact::check_name(&self.name)?;
        if self.group_by.is_empty() {
            return bad("group_by", "is empty".into());
        }
        for (i, m) in self.members.iter().enumerate() {
            m.validate().map_err(|e| Error::Invalid {
                field: format!("members[{i}]"),
                message: e.to_string(),
            })?;
            if !m.name.starts_with(&format!("{}/", self.name)) {
                return bad(
                    &format!("members[{i}].name"),
                    format!("`{}` is not `{}/<value>`", m.name, self.name),
                );
            }
            if m.features != self.features {
                return bad(
                    &format!("members[{i}].features"),
                    "differ from the group's features".into(),
                );
            }
        }
        if self.fingerprint != self.compute_fingerprint() {
            return bad(
                "fingerprint",
                "does not match the members (edited by hand?)".into(),
            );
        }
        Ok(())
    }
}
