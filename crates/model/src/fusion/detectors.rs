//! Which detectors make the fused score (`fusion.detectors`) and their weights
//! (`fusion.weights`).

use serde::{Deserialize, Serialize};

/// Which detectors the fused score is made of (`fusion.detectors`): a list of `pca` (the SPE
/// and T² signal), `mad` (the largest robust |z|), `kmeans` (the distance to the nearest
/// training centroid), `iforest` (the Isolation Forest score), `seasonal` (the largest |z|
/// against the row's hour of the day or week), `ocsvm` (the one-class SVM score) and `forecast`
/// (the largest |z| outside the MSTL forecast's interval), the last five for models trained with
/// them; or the same names comma-separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Detectors {
    /// The PCA signal.
    pub pca: bool,
    /// The MAD signal.
    pub mad: bool,
    /// The k-means distance signal.
    pub kmeans: bool,
    /// The Isolation Forest signal.
    pub iforest: bool,
    /// The seasonal baseline signal.
    pub seasonal: bool,
    /// The one-class SVM signal.
    pub ocsvm: bool,
    /// The forecast residual signal.
    pub forecast: bool,
}

impl Default for Detectors {
    fn default() -> Self {
        Self {
            pca: true,
            mad: true,
            kmeans: false,
            iforest: false,
            seasonal: false,
            ocsvm: false,
            forecast: false,
        }
    }
}

impl Detectors {
    /// Every name a detector can have.
    pub const NAMES: [&'static str; 7] = [
        "pca", "mad", "kmeans", "iforest", "seasonal", "ocsvm", "forecast",
    ];

    /// Which are on, in the order of [`Detectors::NAMES`].
    pub(super) fn flags(&self) -> [bool; 7] {
        [
            self.pca,
            self.mad,
            self.kmeans,
            self.iforest,
            self.seasonal,
            self.ocsvm,
            self.forecast,
        ]
    }

    pub(super) fn names(&self) -> Vec<&'static str> {
        self.flags()
            .into_iter()
            .zip(Self::NAMES)
            .filter_map(|(on, n)| on.then_some(n))
            .collect()
    }

    pub(super) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut d = Self {
            pca: false,
            mad: false,
            kmeans: false,
            iforest: false,
            seasonal: false,
            ocsvm: false,
            forecast: false,
        };
        for n in names {
            match n.trim() {
                "pca" => d.pca = true,
                "mad" => d.mad = true,
                "kmeans" => d.kmeans = true,
                "iforest" => d.iforest = true,
                "seasonal" => d.seasonal = true,
                "ocsvm" => d.ocsvm = true,
                "forecast" => d.forecast = true,
                "" => {}
                other => {
                    return Err(format!(
                        "fusion.detectors: unknown detector `{other}` (expected {})",
                        Self::NAMES.join(", ")
                    ));
                }
            }
        }
        if d.names().is_empty() {
            return Err("fusion.detectors: name at least one detector".into());
        }
        Ok(d)
    }
}

impl Serialize for Detectors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Detectors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Names {
            List(Vec<String>),
            Text(String),
        }
        let names = match Names::deserialize(d)? {
            Names::List(l) => l,
            Names::Text(t) => t.split(',').map(str::to_string).collect(),
        };
        Self::from_names(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// Per-detector weights (`fusion.weights`), in the order of [`Detectors::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// The PCA signal's.
    pub pca: f64,
    /// The MAD signal's.
    pub mad: f64,
    /// The k-means signal's.
    pub kmeans: f64,
    /// The Isolation Forest's.
    pub iforest: f64,
    /// The seasonal baseline's.
    pub seasonal: f64,
    /// The one-class SVM's.
    pub ocsvm: f64,
    /// The forecast residual's.
    pub forecast: f64,
}

impl Weights {
    /// The weights in the order of [`Detectors::NAMES`].
    pub fn values(&self) -> [f64; 7] {
        [
            self.pca,
            self.mad,
            self.kmeans,
            self.iforest,
            self.seasonal,
            self.ocsvm,
            self.forecast,
        ]
    }
}
