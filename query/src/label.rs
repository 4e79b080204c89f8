//! [`Label`]: a name from the configuration (exporter, site, interface, provider, egress path,
//! cloud range) as a flow row carries it: a string interned for the life of the process.
//!
//! Why not `String` in [`crate::schema::FlowRow`]: the collector makes and frees millions of rows
//! a second. With a model configured, enrichment copied up to eight strings into every row (eight
//! allocations, freed on another thread), and even without one every freed batch was read again
//! row by row to find strings to free (a twelfth of the collector's CPU with a null sink at
//! 4 M records/s). A `Label` is a 16-byte copy, and a row made only of `Copy` fields is freed
//! without being touched. It is also 8 bytes smaller than a `String`.
//!
//! Interning never frees, which is safe because the set of distinct labels is bounded by the
//! configuration: the model's names and the cloud ranges' labels. Decoded exporter data never
//! becomes a label. Rows read back from ClickHouse (the query service's flow API) intern what
//! they read, which is the same set.

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned string; see the module docs. Compares, orders and hashes as its text.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(&'static str);

/// Every label interned so far.
static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

impl Label {
    /// The empty label (what a row holds where the model says nothing).
    pub const EMPTY: Label = Label("");

    /// The label with this text, interned on first use (a lock and a hash lookup: made when the
    /// configuration is loaded, not per record).
    pub fn new(text: &str) -> Self {
        if text.is_empty() {
            return Self::EMPTY;
        }
        // A poisoned lock only means another thread panicked while inserting; the set is intact.
        let mut interned = INTERNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = interned.get(text) {
            return Self(existing);
        }
        let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
        interned.insert(leaked);
        Self(leaked)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Deref for Label {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl From<&str> for Label {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<&String> for Label {
    fn from(text: &String) -> Self {
        Self::new(text)
    }
}

impl From<String> for Label {
    fn from(text: String) -> Self {
        Self::new(&text)
    }
}

impl From<Label> for String {
    fn from(label: Label) -> Self {
        label.0.to_owned()
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        self.0 == other
    }
}

impl PartialEq<Label> for &str {
    fn eq(&self, other: &Label) -> bool {
        *self == other.0
    }
}

impl PartialEq<Label> for String {
    fn eq(&self, other: &Label) -> bool {
        self == other.0
    }
}

/// As a string (ClickHouse `String`).
impl Serialize for Label {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Label;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Label, E> {
                Ok(Label::new(text))
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Label, E> {
                std::str::from_utf8(bytes)
                    .map(Label::new)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self))
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_interned_string() {
        let a = Label::new("edge1 / et-0/0/1 (Transit A)");
        let b = Label::from(String::from("edge1 / et-0/0/1 (Transit A)"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()), "one copy");
        assert_eq!(a, "edge1 / et-0/0/1 (Transit A)");
        assert_ne!(a, Label::new("edge2"));
        assert_eq!(Label::new(""), Label::EMPTY);
        assert!(Label::default().is_empty());
    }

    #[test]
    fn serialises_as_a_plain_string() {
        let label = Label::new("aws/S3/eu-west-1");
        assert_eq!(
            serde_json::to_string(&label).expect("json"),
            "\"aws/S3/eu-west-1\""
        );
        let back: Label = serde_json::from_str("\"aws/S3/eu-west-1\"").expect("json");
        assert!(std::ptr::eq(back.as_str(), label.as_str()));
    }

    #[test]
    fn a_row_of_labels_has_no_drop_glue() {
        assert!(!std::mem::needs_drop::<crate::schema::FlowRow>());
    }
}
