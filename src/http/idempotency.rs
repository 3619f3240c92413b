//! The `Idempotency-Key` header of `POST /api/generate` and `POST /api/generate/batch`: the key as
//! sent, and the digest that tells "the same body" from another one.
//!
//! The digest is SHA-256 over the route and the body's canonical JSON (object keys sorted at every
//! depth, no whitespace), so a client that re-serialises its retry differently still matches; a
//! key used on one route never matches the other.

use hyper::HeaderMap;
use serde_json::Value;

use super::error::ApiError;
use crate::actors::scheduler::IdempotencyKey;

pub const HEADER: &str = "idempotency-key";
/// Longest key, in bytes.
const MAX_KEY: usize = 255;

/// The request's key and the digest of `body` on `route`; `None` without the header.
pub fn key_of(
    headers: &HeaderMap,
    route: &str,
    body: &Value,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters (for example a UUID)."
            ))
        })?;
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        digest: digest(route, body),
    }))
}

/// Hex SHA-256 of `route`, a newline and the canonical JSON of `body`.
pub fn digest(route: &str, body: &Value) -> String {
    let mut text = String::with_capacity(256);
    text.push_str(route);
    text.push('\n');
    canonical(body, &mut text);
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_digest_ignores_key_order_and_whitespace_but_not_values_or_routes() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": 1}], "a": "s"}"#).unwrap();
        let b = json!({"a": "s", "b": [1, {"x": 1, "y": 2}]});
        assert_eq!(digest("/api/generate", &a), digest("/api/generate", &b));
        assert_ne!(
            digest("/api/generate", &a),
            digest("/api/generate/batch", &a)
        );
        let c = json!({"a": "s", "b": [{"x": 1, "y": 2}, 1]});
        assert_ne!(digest("/api/generate", &b), digest("/api/generate", &c));
        assert_eq!(digest("r", &json!({})).len(), 64);
    }
}
