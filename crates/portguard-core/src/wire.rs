//! Serde helpers for status fields whose wire form is one string: the
//! `serde_via_str!` macro and the error of a string that names no value
//! ([`UnknownValue`]), and, for tests, `assert_wire` and `wire_error`.
//! Used by the control protocol and by the modules whose types it carries.

/// Serializes a type as its `Display` string and reads it back through
/// `FromStr`: for status fields whose wire form is one string that carries
/// detail (`restored (table missing)`, `failed: EPERM`), which serde's
/// derive cannot spell. A string `FromStr` refuses is a deserialization
/// error with its message.
macro_rules! serde_via_str {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_str;

/// A status string that names none of the values a field can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} `{}`, expected {expected}", found.escape_debug())]
pub struct UnknownValue {
    /// What was read (`ipv6_forward_policy`, `reconcile outcome`).
    pub field: &'static str,
    pub found: String,
    /// The values the field can take, in words.
    pub expected: &'static str,
}

/// Test helper: `value` is `text` on the wire (a JSON string) and reads
/// back as itself.
#[cfg(test)]
pub(crate) fn assert_wire<T>(value: &T, text: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    #![allow(clippy::unwrap_used)]
    let json = serde_json::to_string(value).unwrap();
    assert_eq!(json, serde_json::to_string(text).unwrap(), "{value:?}");
    assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
}

/// Test helper: the error reading `text` as a `T`.
#[cfg(test)]
pub(crate) fn wire_error<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
    #![allow(clippy::unwrap_used)]
    serde_json::from_str::<T>(&serde_json::to_string(text).unwrap())
        .unwrap_err()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_quote_what_was_found_escaped() {
        let error = UnknownValue {
            field: "reconcile outcome",
            found: "ok\n\u{1b}".into(),
            expected: "`unchanged` or `applied`",
        };
        assert_eq!(
            error.to_string(),
            "unknown reconcile outcome `ok\\n\\u{1b}`, expected `unchanged` or `applied`"
        );
    }
}
