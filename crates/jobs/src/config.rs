//! The settings of `tads score`'s fusion, alerts and severity: built-in defaults, overridden by
//! a TOML file (with `${VAR:default}` environment substitution), overridden by `--set
//! key=value` on the command line. The effective values go into the run's manifest.
//!
//! ```toml
//! [fusion]
//! rule = "max"              # or "weighted", or "vote"
//! pca_weight = 0.5          # the PCA signal's weight under "weighted"
//! # weights = { pca = 2, mad = 1, seasonal = 1 }  # "weighted": a mean of every signal
//! spe_limit = "jm_999"     # jm_99, jm_999, empirical_99 or empirical_999
//! t2_limit = "t2_999"       # t2_99, t2_999 or off
//! # mad_cut = 6.0           # default: the model's own cut
//!
//! [alerts]
//! enabled = true
//! enter = ${TADS_ENTER:0.8}
//! exit = 0.5
//! min_points = 3
//! instant = 2.0             # one row at or above this opens an alert at once
//! cooldown = "30m"          # a duration (s, m, h, d) or a number of rows
//! key = "host_id"
//! time = "ts"
//!
//! [severity]
//! warning = 2.0
//! critical = 4.0
//! ```

use serde::{Deserialize, Serialize};
use tads_model::{Fusion, Severity};

use crate::{Error, Result};

/// A cooldown: rows, or a duration written `90s`, `30m`, `2h` or `1d`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CooldownSpec {
    /// A number of rows.
    Rows(u64),
    /// A duration.
    Span(String),
}

impl CooldownSpec {
    /// The cooldown for the alert machine; the message names the bad value.
    pub fn resolve(&self) -> std::result::Result<tads_model::Cooldown, String> {
        match self {
            Self::Rows(n) => Ok(tads_model::Cooldown::Rows(*n)),
            Self::Span(s) => parse_duration(s)
                .map(tads_model::Cooldown::Micros)
                .ok_or_else(|| {
                    format!(
                        "alerts.cooldown: `{s}` is neither a number of rows nor a duration like 90s, 30m, 2h or 1d"
                    )
                }),
        }
    }
}

/// `90s`, `30m`, `2h`, `1d` (or `0`) in microseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(unit_at);
    let n: i64 = n.parse().ok()?;
    let scale: i64 = match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The alert rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    /// Whether `tads score` computes alerts at all.
    pub enabled: bool,
    /// A fused score at or above this opens an alert (after `min_points` rows).
    pub enter: f64,
    /// An open alert stays open while the fused score is at or above this.
    pub exit: f64,
    /// Rows in a row at or above `enter` before an alert opens.
    pub min_points: u64,
    /// A fused score at or above this opens an alert at once (a one-row spike).
    pub instant: f64,
    /// An open alert whose score falls below `exit` is held while more than half of the key's
    /// latest `hold_rows` scores are at or above `hold_level` (12 by default; 0: no hold): a
    /// new alert that would open meanwhile continues it instead, and the held rows join it.
    pub hold_rows: u32,
    /// See `hold_rows`; not raised by the adaptive threshold (a bridging alert clears the
    /// raised threshold anyway).
    pub hold_level: f64,
    /// After an alert closes, no new one opens for this long.
    pub cooldown: CooldownSpec,
    /// The column that identifies a series (one alert machine per value).
    pub key: String,
    /// The time column that orders each series.
    pub time: String,
    /// How the rows get into time order per key: `auto` walks the files one after another when
    /// their Parquet statistics say each key's rows are in time order across them (and falls
    /// back to sorting when a file turns out not to be), `sort` always sorts.
    pub walk: WalkOrder,
    /// Whether each key's threshold to open (and to stay open, scaled alike) rises to the
    /// `adaptive_quantile` of its own quiet scores over the previous `adaptive_days` UTC days
    /// (see [`tads_model::adapt`]); `enter` stays the floor.
    pub adaptive: bool,
    /// The quantile of the quiet scores (between 0 and 1).
    pub adaptive_quantile: f64,
    /// How many previous days the quantile looks back on.
    pub adaptive_days: u32,
    /// Quiet scores the previous day needs for its threshold to apply.
    pub adaptive_min_rows: u64,
}

impl AlertRules {
    /// The hold on the trailing median, when it is on.
    pub fn hold(&self) -> Option<tads_model::Hold> {
        (self.hold_rows > 0).then_some(tads_model::Hold {
            rows: self.hold_rows,
            level: self.hold_level,
        })
    }

    /// The adaptive threshold's settings, when it is on.
    pub fn adaptive(&self) -> Option<tads_model::Adaptive> {
        self.adaptive.then_some(tads_model::Adaptive {
            quantile: self.adaptive_quantile,
            days: self.adaptive_days,
            min_rows: self.adaptive_min_rows,
        })
    }
}

/// See [`AlertRules::walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalkOrder {
    /// Files in time order are walked in order; anything else is sorted.
    #[default]
    Auto,
    /// Always hash-partition and sort.
    Sort,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            enabled: true,
            enter: 0.8,
            exit: 0.5,
            min_points: 3,
            instant: 2.0,
            hold_rows: 12,
            hold_level: 0.8,
            cooldown: CooldownSpec::Span("30m".into()),
            key: "host_id".into(),
            time: "ts".into(),
            walk: WalkOrder::Auto,
            adaptive: true,
            adaptive_quantile: 0.995,
            adaptive_days: 3,
            adaptive_min_rows: 12,
        }
    }
}

/// Everything `tads score` can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// How the PCA and MAD signals become one score.
    pub fusion: Fusion,
    /// How scores become alerts.
    pub alerts: AlertRules,
    /// Severity bands on an alert's peak score.
    pub severity: Severity,
    /// Each row's reference level: the previous day's, or the training level.
    pub drift: crate::drift::DriftSettings,
}

impl ScoreConfig {
    /// The defaults, then the TOML text `file` (already read; `origin` names it in errors), then
    /// each `key=value` of `overrides`, checked.
    pub fn load(file: Option<(&str, &str)>, overrides: &[String]) -> Result<Self> {
        let bad = |m: String| Error::Input(m);
        let mut table = match file {
            Some((origin, text)) => {
                check_nesting(origin, text)?;
                let text = substitute(text).map_err(|e| bad(format!("{origin}: {e}")))?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| bad(format!("{origin}: {}", one_line(&e.to_string()))))?
            }
            None => toml::Table::new(),
        };
        for o in overrides {
            let (key, value) = o.split_once('=').ok_or_else(|| {
                bad(format!(
                    "--set {o}: expected key=value, e.g. alerts.enter=1.5"
                ))
            })?;
            check_nesting(&format!("--set {key}"), value)?;
            set(&mut table, key.trim(), parse_value(value.trim()))
                .map_err(|e| bad(format!("--set {o}: {e}")))?;
        }
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("config: {}", one_line(&e.to_string()))))?;
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks every value; the message names the bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.fusion.validate()?;
        self.severity.validate()?;
        self.drift.validate()?;
        let a = &self.alerts;
        if !(a.enter.is_finite() && a.exit.is_finite()) {
            return Err("alerts.enter and alerts.exit must be numbers".into());
        }
        if !(a.instant.is_finite() && a.instant >= a.enter) {
            return Err(format!(
                "alerts.instant ({}) must be a number at or above alerts.enter ({})",
                a.instant, a.enter
            ));
        }
        if a.exit > a.enter {
            return Err(format!(
                "alerts.exit ({}) is above alerts.enter ({}): an alert would close before it opens",
                a.exit, a.enter
            ));
        }
        if a.hold_rows > 0 && !(a.hold_level.is_finite() && a.hold_level > 0.0) {
            return Err(format!(
                "alerts.hold_level ({}) must be a number above 0 (or alerts.hold_rows = 0: no hold)",
                a.hold_level
            ));
        }
        a.cooldown.resolve()?;
        if let Some(adaptive) = a.adaptive() {
            adaptive.check().map_err(|e| format!("alerts.{e}"))?;
            if a.enter <= 0.0 {
                return Err(format!(
                    "alerts.enter ({}) must be above 0 with alerts.adaptive (the threshold scales from it)",
                    a.enter
                ));
            }
        }
        Ok(())
    }
}

/// A TOML error's text on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command-line value: TOML if it parses as one (`1.5`, `true`, `"x"`), a string otherwise.
/// Arrays and tables nested deeper than this in a setting are refused before TOML parses them
/// (its parser recurses); no TADS setting nests more than twice.
const MAX_NESTING: usize = 32;

/// Refuses text whose brackets nest deeper than [`MAX_NESTING`].
fn check_nesting(origin: &str, text: &str) -> Result<()> {
    let depth = tads_sql::depth::bracket_depth(text);
    if depth > MAX_NESTING {
        return Err(Error::Input(format!(
            "{origin}: brackets nested {depth} deep, more than the {MAX_NESTING} a setting may have"
        )));
    }
    Ok(())
}

fn parse_value(v: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

/// Sets `a.b.c` in `table`, creating the tables on the way. A key of more than [`MAX_NESTING`]
/// parts is refused: its tables would be as deep, and dropping them recurses.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> std::result::Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    if parts.len() > MAX_NESTING {
        return Err(format!(
            "a key of {} parts, more than the {MAX_NESTING} a setting may have",
            parts.len()
        ));
    }
    let last = parts.pop().filter(|k| !k.is_empty()).ok_or("empty key")?;
    let mut t = table;
    for p in parts {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// Replaces every `${VAR}` and `${VAR:default}` with the variable's value, or the default when
/// it is unset. A variable that is unset and has no default is an error naming it. Inside
/// quotes, a substituted number stays a string: write `enter = ${TADS_ENTER:1.0}` for a number.
pub fn substitute(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}`: {}", &rest[start..]))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`${{{inner}}}`: `{name}` is not a variable name"));
        }
        match (std::env::var(name), default) {
            (Ok(v), _) => out.push_str(&v),
            (Err(_), Some(d)) => out.push_str(d),
            (Err(_), None) => {
                return Err(format!(
                    "${{{name}}} is not set and has no default (write ${{{name}:default}})"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides_with_substitution() {
        // The variable names are unique to this test; none is set.
        let text = "[alerts]\nenter = ${TADS_TEST_CFG_ENTER:1.5}\nexit = ${TADS_TEST_CFG_UNSET:0.7}\ncooldown = \"2h\"\n";
        let c = ScoreConfig::load(Some(("t.toml", text)), &["alerts.min_points=5".into()]).unwrap();
        assert_eq!(c.alerts.enter, 1.5);
        assert_eq!(c.alerts.exit, 0.7);
        assert_eq!(c.alerts.min_points, 5);
        assert_eq!(
            c.alerts.cooldown.resolve().unwrap(),
            tads_model::Cooldown::Micros(7_200_000_000)
        );
        let c = ScoreConfig::load(
            None,
            &["fusion.rule=weighted".into(), "alerts.cooldown=3".into()],
        )
        .unwrap();
        assert_eq!(c.fusion.rule, tads_model::Rule::Weighted);
        assert_eq!(c.alerts.cooldown, CooldownSpec::Rows(3));
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |file: Option<&str>, o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            ScoreConfig::load(file.map(|f| ("t.toml", f)), &o)
                .unwrap_err()
                .to_string()
        };
        assert!(err(None, &["alerts.entr=1"]).contains("entr"));
        assert!(err(None, &["alerts.exit=3"]).contains("alerts.exit"));
        assert!(err(None, &["alerts.cooldown=soon"]).contains("soon"));
        assert!(err(None, &["fusion.spe_limit=jm_5"]).contains("jm_5"));
        assert!(err(Some("x = ${TADS_TEST_CFG_NOPE}"), &[]).contains("TADS_TEST_CFG_NOPE"));
        assert!(err(Some("[alerts\n"), &[]).starts_with("t.toml"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90_000_000));
        assert_eq!(parse_duration("30m"), Some(1_800_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5 weeks"), None);
    }

    #[test]
    fn settings_written_back_load_again() {
        // Found by fuzzing (fuzz/corpus/settings/regression-multi-line-string): a value holding
        // a quote, brackets and a line break, which TOML writes as a multi-line string, made the
        // nesting guard count the brackets inside it and refuse the file.
        let key = format!("a'''\"{}\nb", "{".repeat(40));
        let c = ScoreConfig::load(None, &[format!("alerts.key={key}")]).unwrap();
        assert_eq!(c.alerts.key, key);
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("\"\"\""), "{text}");
        assert_eq!(ScoreConfig::load(Some(("t.toml", &text)), &[]).unwrap(), c);
        // Brackets in a comment do not count either; real nesting still does.
        let deep = "[".repeat(40);
        let commented = format!("# {deep}\n[alerts]\nenter = 1.0\n");
        assert_eq!(
            ScoreConfig::load(Some(("t.toml", &commented)), &[])
                .unwrap()
                .alerts
                .enter,
            1.0
        );
        let nested = format!("x = {deep}{}\n", "]".repeat(40));
        let err = ScoreConfig::load(Some(("t.toml", &nested)), &[]).unwrap_err();
        assert!(err.to_string().contains("nested 40 deep"), "{err}");
    }

    #[test]
    fn deep_keys_are_refused() {
        // Found by fuzzing (fuzz/corpus/settings/regression-deep-set-key): `--set a.a.a…=1` with
        // 50,000 parts built tables as deep, and dropping them overflowed the stack.
        let key = vec!["a"; 50_000].join(".");
        let err = ScoreConfig::load(None, &[format!("{key}=1")]).unwrap_err();
        assert!(err.to_string().contains("a key of 50000 parts"), "{err}");
        // The file's dotted keys are TOML's to limit; it refuses them without recursing.
        assert!(ScoreConfig::load(Some(("t.toml", &format!("{key} = 1"))), &[]).is_err());
        let c = ScoreConfig::load(None, &["alerts.enter=1.5".into()]).unwrap();
        assert_eq!(c.alerts.enter, 1.5);
    }
}
