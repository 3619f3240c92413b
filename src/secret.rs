//! `Secret`: an API key, session id or token that must never reach an event, a log line, an error
//! message or `Debug` output; and [`Redactor`], which hides a set of secrets wherever they appear.
//!
//! A `Secret`'s `Debug` and `Display` print `[redacted]`; the value is read only through
//! [`Secret::expose`], at the one place that puts it on the wire (a header or a form field). It
//! serializes as the plain string so that the config file and environment can set it, and
//! [`collect`] finds every `Secret` inside a serializable value (the config): a new key of type
//! `Secret` is hidden without being listed anywhere.
//!
//! The daemon [`install`]s one process-wide redactor for what has no config at hand (the log writer,
//! the HTTP client's answers). Installing only adds: a secret once configured stays hidden, even
//! after a reload replaced it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// What a hidden secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not hidden: too short to be a real key, and replacing them would mangle
/// ordinary text.
const MIN_LEN: usize = 4;

/// A secret string. Empty means "not set".
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// While [`collect`] runs on this thread: the value of every `Secret` serialized.
    static COLLECTING: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        COLLECTING.with(|c| {
            if let Some(found) = c.borrow_mut().as_mut() {
                found.push(self.0.clone());
            }
        });
        s.serialize_str(&self.0)
    }
}

/// Every `Secret` inside `value`, found by serializing it (to nowhere).
pub fn collect<T: Serialize>(value: &T) -> Vec<Secret> {
    let outer = COLLECTING.with(|c| c.replace(Some(Vec::new())));
    // Writing to a sink cannot fail for want of space; a value serde cannot write would stop the
    // walk early, and plain config data has none.
    let _ = serde_json::to_writer(std::io::sink(), value);
    let found = COLLECTING.with(|c| c.replace(outer)).unwrap_or_default();
    found.into_iter().map(Secret).collect()
}

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
        Redactor::new([self]).scrub(text).into_owned()
    }
}

/// Hides a set of secrets in text and JSON: each one as is, trimmed, and percent-encoded (as a form
/// or a query would carry it). Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is hidden whole.
    needles: Arc<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Redactor {
        let mut needles = Vec::new();
        for s in secrets {
            let raw = s.0.as_str();
            for form in [
                raw.to_string(),
                raw.trim().to_string(),
                crate::percent::encode(raw.trim()),
            ] {
                if form.len() >= MIN_LEN && !needles.contains(&form) {
                    needles.push(form);
                }
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Redactor {
            needles: Arc::new(needles),
        }
    }

    /// Hides nothing.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Hides what either hides.
    pub fn union(&self, other: &Redactor) -> Redactor {
        if other.needles.iter().all(|n| self.needles.contains(n)) {
            return self.clone();
        }
        let secrets: Vec<Secret> = self
            .needles
            .iter()
            .chain(other.needles.iter())
            .map(|n| Secret(n.clone()))
            .collect();
        Redactor::new(&secrets)
    }

    /// `text` with every secret replaced by `[redacted]` (borrowed when there is none).
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for n in self.needles.iter() {
            if out.contains(n.as_str()) {
                out = Cow::Owned(out.replace(n.as_str(), REDACTED));
            }
        }
        out
    }

    /// Every string in `value`, object keys included, scrubbed in place.
    pub fn scrub_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = self.scrub(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let dirty = map.keys().any(|k| matches!(self.scrub(k), Cow::Owned(_)));
                if dirty {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.scrub(&k).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.scrub_json(v));
            }
            _ => {}
        }
    }
}

/// The process-wide redactor (see the module comment); `None` until the first [`install`].
static INSTALLED: RwLock<Option<Redactor>> = RwLock::new(None);

/// Adds `redactor`'s secrets to the process-wide redactor.
pub fn install(redactor: &Redactor) {
    // A writer that panicked left a valid `Option` behind: keep using it.
    let mut slot = INSTALLED.write().unwrap_or_else(|e| e.into_inner());
    let merged = match slot.as_ref() {
        Some(current) => current.union(redactor),
        None => redactor.clone(),
    };
    *slot = Some(merged);
}

/// The process-wide redactor: every secret installed so far.
pub fn installed() -> Redactor {
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
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

    #[derive(Serialize)]
    struct Nested {
        name: String,
        inner: Inner,
        list: Vec<Secret>,
    }

    #[derive(Serialize)]
    struct Inner {
        key: Secret,
        unset: Secret,
    }

    #[test]
    fn collect_finds_every_secret_field_however_deep() {
        let v = Nested {
            name: "not-a-secret".into(),
            inner: Inner {
                key: Secret::new("deep-key-1"),
                unset: Secret::default(),
            },
            list: vec![Secret::new("listed-key-2")],
        };
        let found = collect(&v);
        assert_eq!(
            found,
            vec![
                Secret::new("deep-key-1"),
                Secret::default(),
                Secret::new("listed-key-2")
            ]
        );
        // Serializing outside `collect` records nothing.
        let _ = serde_json::to_string(&v);
        assert!(collect(&0u8).is_empty());
    }

    #[test]
    fn a_redactor_hides_each_form_of_each_secret_in_text_and_json() {
        let secrets = [
            Secret::new("abc/def+ghi"),
            Secret::new("abc"),
            Secret::new("sk-LONGER-abc/def+ghi-tail"),
        ];
        let r = Redactor::new(&secrets);
        assert_eq!(
            r.scrub("a sk-LONGER-abc/def+ghi-tail b abc/def+ghi c abc%2Fdef%2Bghi d abc"),
            "a [redacted] b [redacted] c [redacted] d abc"
        );
        assert!(matches!(r.scrub("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({
            "detail": "token abc/def+ghi echoed",
            "nested": [{"abc/def+ghi": 1, "n": 2}],
        });
        r.scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "detail": "token [redacted] echoed",
                "nested": [{"[redacted]": 1, "n": 2}],
            })
        );
    }

    #[test]
    fn installing_only_adds_secrets() {
        install(&Redactor::new(&[Secret::new("installed-first-77")]));
        install(&Redactor::new(&[Secret::new("installed-second-88")]));
        let r = installed();
        assert_eq!(
            r.scrub("installed-first-77 installed-second-88"),
            "[redacted] [redacted]"
        );
    }
}
