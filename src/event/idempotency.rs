//! Idempotency tags: what the `queued` event of a job created under an `Idempotency-Key` carries
//! (`payload.idempotency = {key, digest, index, count}`), so that the key, the digest of the body it
//! came with, and the job's place in its submit survive restarts in the log itself.
//!
//! A key is in use for [`WINDOW_MS`] after its jobs were created; afterwards it may name a new
//! submit. `index`/`count` place a job in a batch (a single submit is `0`/`1`).

use serde_json::{json, Value};

/// How long a key stays bound to its submit: 24 hours.
pub const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The idempotency part of one job's `queued` payload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyTag {
    pub key: String,
    /// Hex SHA-256 of the submit's route and canonical body (see `http`).
    pub digest: String,
    /// The job's place in its submit, and how many jobs the submit made.
    pub index: u32,
    pub count: u32,
}

impl IdempotencyTag {
    /// The tag in a `queued` payload, if it has a well-formed one.
    pub fn from_payload(payload: &Value) -> Option<IdempotencyTag> {
        let t = payload.get("idempotency")?;
        let key = t.get("key")?.as_str()?.to_string();
        let digest = t.get("digest")?.as_str()?.to_string();
        let index = u32::try_from(t.get("index")?.as_u64()?).ok()?;
        let count = u32::try_from(t.get("count")?.as_u64()?).ok()?;
        (index < count).then_some(IdempotencyTag {
            key,
            digest,
            index,
            count,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({ "key": self.key, "digest": self.digest, "index": self.index, "count": self.count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_malformed_ones_are_none() {
        let t = IdempotencyTag {
            key: "k-1".into(),
            digest: "ab".into(),
            index: 2,
            count: 3,
        };
        let payload = json!({ "idempotency": t.to_json() });
        assert_eq!(IdempotencyTag::from_payload(&payload), Some(t));
        for bad in [
            json!({}),
            json!({ "idempotency": { "key": "k", "digest": "d", "index": 3, "count": 3 } }),
            json!({ "idempotency": { "key": 1, "digest": "d", "index": 0, "count": 1 } }),
        ] {
            assert_eq!(IdempotencyTag::from_payload(&bad), None, "{bad}");
        }
    }
}
