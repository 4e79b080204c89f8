//! Label sets, their Prometheus/Alertmanager fingerprint, and label matchers.
//!
//! Stage: shared by `state` (identity of an alert), `silence` (which alerts a silence mutes) and
//! `config` (which receivers a route sends to). Pure: label maps in, fingerprints and match
//! verdicts out.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Labels of one alert, sorted by name (the order the fingerprint needs).
pub type LabelSet = BTreeMap<String, String>;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A matcher's label name is empty.
    #[error("matcher: label name is empty")]
    EmptyName,
    /// A regex matcher does not compile.
    #[error("matcher {name}: invalid regex {value:?}: {source}")]
    BadRegex {
        /// Label name of the matcher.
        name: String,
        /// The pattern as given.
        value: String,
        /// What the regex compiler said.
        source: Box<regex::Error>,
    },
    /// A matcher string has none of the operators `=`, `!=`, `=~`, `!~`.
    #[error("matcher {0:?}: expected name=value, name!=value, name=~regex or name!~regex")]
    Syntax(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// FNV-1a 64-bit offset basis (what an empty label set fingerprints to).
const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 1_099_511_628_211;
/// Byte Prometheus puts after every label name and value (`model.SeparatorByte`).
const SEPARATOR: u8 = 0xff;

/// Identity of an alert: Prometheus' `LabelSet.Fingerprint()`, printed as Alertmanager prints it
/// (16 lowercase hex digits, e.g. in the `fingerprint` field of its webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// Fingerprint of a label set: FNV-1a 64 over the labels sorted by name, each hashed as name
    /// bytes, 0xff, value bytes, 0xff (Prometheus `labelSetToFingerprint`).
    pub fn of(labels: &LabelSet) -> Self {
        let mut hash = FNV_OFFSET;
        let mut add = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        for (name, value) in labels {
            add(name.as_bytes());
            add(&[SEPARATOR]);
            add(value.as_bytes());
            add(&[SEPARATOR]);
        }
        Fingerprint(hash)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16)
            .map(Fingerprint)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One Alertmanager label matcher (the API v2 shape: `name`, `value`, `isRegex`, `isEqual`).
///
/// Semantics are Alertmanager's: a missing label matches as the empty string; a regex is anchored
/// at both ends (`^(?:value)$`); `is_equal = false` negates the match.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Value to compare with, or the regex when `is_regex`.
    pub value: String,
    /// The value is a regular expression (anchored).
    #[serde(default)]
    pub is_regex: bool,
    /// `true` for `=` / `=~`, `false` for `!=` / `!~`.
    #[serde(default = "default_true")]
    pub is_equal: bool,
    /// The compiled, anchored regex (built by [`Matcher::compile`]).
    #[serde(skip)]
    regex: Option<Regex>,
}

fn default_true() -> bool {
    true
}

impl Matcher {
    /// A checked matcher; a bad regex is an error naming the label.
    pub fn new(name: &str, value: &str, is_regex: bool, is_equal: bool) -> Result<Self> {
        let mut matcher = Matcher {
            name: name.to_string(),
            value: value.to_string(),
            is_regex,
            is_equal,
            regex: None,
        };
        matcher.compile()?;
        Ok(matcher)
    }

    /// Parses Alertmanager's text form: `name=value`, `name!=value`, `name=~regex`, `name!~regex`
    /// (a value may be wrapped in double quotes).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (name, op, value) = ["!=", "=~", "!~", "="]
            .iter()
            .filter_map(|op| text.find(op).map(|at| (at, *op)))
            .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())))
            .map(|(at, op)| (&text[..at], op, &text[at + op.len()..]))
            .ok_or_else(|| Error::Syntax(text.to_string()))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Matcher::new(name.trim(), value, op.ends_with('~'), !op.starts_with('!'))
    }

    /// Checks the name and compiles the regex (needed after deserialising).
    pub fn compile(&mut self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::EmptyName);
        }
        if self.is_regex {
            let regex = Regex::new(&format!("^(?:{})$", self.value)).map_err(|source| Error::BadRegex {
                name: self.name.clone(),
                value: self.value.clone(),
                source: Box::new(source),
            })?;
            self.regex = Some(regex);
        }
        Ok(())
    }

    /// Whether the label set matches (a missing label is the empty string).
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let actual = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match (&self.regex, self.is_regex) {
            (Some(regex), _) => regex.is_match(actual),
            // Not compiled (deserialised without `compile`): compile on the fly rather than
            // pretend a match.
            (None, true) => Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(actual)),
            (None, false) => actual == self.value,
        };
        hit == self.is_equal
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// Whether every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &LabelSet) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Test vectors from prometheus/common `model/fingerprinting` tests (`TestMetricToFingerprint`).
    #[test]
    fn fingerprint_matches_prometheus_test_vectors() {
        assert_eq!(Fingerprint::of(&LabelSet::new()).0, 14_695_981_039_346_656_037);
        let set = labels(&[("name", "garland, briggs"), ("fear", "love is not enough")]);
        assert_eq!(Fingerprint::of(&set).0, 5_799_056_148_416_392_346);
        assert_eq!(
            Fingerprint::of(&set).to_string(),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
    }

    #[test]
    fn matcher_semantics_follow_alertmanager() {
        let set = labels(&[("alertname", "transit-utilisation"), ("severity", "critical")]);
        assert!(Matcher::parse("severity=critical").unwrap().matches(&set));
        assert!(!Matcher::parse("severity!=critical").unwrap().matches(&set));
        assert!(Matcher::parse("severity=~crit.*").unwrap().matches(&set));
        // Anchored: a substring does not match.
        assert!(!Matcher::parse("severity=~crit").unwrap().matches(&set));
        assert!(Matcher::parse("severity!~warn|info").unwrap().matches(&set));
        // Missing label = empty string.
        assert!(Matcher::parse("team=\"\"").unwrap().matches(&set));
        assert!(Matcher::parse("team!~.+").unwrap().matches(&set));
        assert!(!Matcher::parse("team=neteng").unwrap().matches(&set));
    }

    #[test]
    fn bad_matchers_are_errors_naming_the_label() {
        let err = Matcher::parse("host=~(10.").unwrap_err().to_string();
        assert!(err.contains("host"), "{err}");
        assert!(matches!(Matcher::parse("novalue"), Err(Error::Syntax(_))));
        assert!(matches!(Matcher::parse("=x"), Err(Error::EmptyName)));
    }
}
