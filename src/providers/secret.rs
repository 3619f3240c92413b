//! `Secret`: an API key, session id or token that must never reach an event, a log line, an error
//! message or `Debug` output.
//!
//! Its `Debug` and `Display` print `[redacted]`; the value is read only through [`Secret::expose`],
//! at the one place that puts it on the wire (a header or a form field). It serializes as the plain
//! string so that the config file and environment can set it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. Empty means "not set".
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// `None` when empty.
    pub fn non_empty(&self) -> Option<&Secret> {
        (!self.is_empty()).then_some(self)
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            // Too short to be a real key; replacing it would mangle ordinary text.
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(\"\")")
        } else {
            f.write_str("Secret([redacted])")
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-very-secret-123");
        assert!(!format!("{s:?}").contains("very-secret"));
        assert!(!format!("{s}").contains("very-secret"));
        assert_eq!(s.expose(), "sk-very-secret-123");
        assert_eq!(
            s.scrub("key=sk-very-secret-123 rejected"),
            "key=[redacted] rejected"
        );
    }
}
