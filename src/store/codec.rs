//! The versioned record codec: the only place that knows how an event is laid out on disk.
//!
//! A record is one format-version byte followed by the bincode (2.0.1, standard config) encoding of
//! that version's struct. Payloads are stored as JSON text, because bincode cannot decode
//! `serde_json::Value`. Version 1 is frozen: change the layout by adding version 2, never by editing
//! `RecordV1`; the golden-bytes test below keeps old records decoding.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventId, JobId, Kind, Level};

pub const VERSION_1: u8 = 1;

/// Why a stored record could not be read back. Names the record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event record {id} is empty")]
    Empty { id: EventId },
    #[error("event record {id} has unknown format version {version}")]
    UnknownVersion { id: EventId, version: u8 },
    #[error("event record {id} is damaged: {reason}")]
    Damaged { id: EventId, reason: String },
}

#[derive(Serialize)]
struct RecordV1 {
    job: u128,
    kind: u8,
    level: u8,
    message: String,
    /// JSON text of the payload object, if any.
    payload: Option<String>,
    timestamp_ms: i64,
    stage: Option<String>,
}

/// Version 1 with borrowed strings: every reader decodes this (lengths checked against the bytes,
/// nothing copied until they are); the wire writer copies nothing at all.
#[derive(Deserialize)]
struct RecordV1Ref<'a> {
    job: u128,
    kind: u8,
    level: u8,
    #[serde(borrow)]
    message: &'a str,
    #[serde(borrow)]
    payload: Option<&'a str>,
    timestamp_ms: i64,
    #[serde(borrow)]
    stage: Option<&'a str>,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

pub fn encode(ev: &Event) -> Vec<u8> {
    let rec = RecordV1 {
        job: ev.job.as_u128(),
        kind: ev.kind.code(),
        level: ev.level.code(),
        message: ev.message.clone(),
        payload: ev.payload.as_ref().map(|p| p.to_string()),
        timestamp_ms: ev.timestamp_ms,
        stage: ev.stage.clone(),
    };
    let mut out = vec![VERSION_1];
    // Encoding into a Vec cannot fail: every field is a plain serde type with no custom errors.
    bincode::serde::encode_into_std_write(&rec, &mut out, config())
        .expect("bincode encoding into a Vec is infallible");
    out
}

/// [`encode`] with `payload` as the stored payload text, whatever it is (tests write records a
/// real encoder never would).
#[cfg(test)]
pub(crate) fn encode_with_payload_text(ev: &Event, payload: &str) -> Vec<u8> {
    let rec = RecordV1 {
        job: ev.job.as_u128(),
        kind: ev.kind.code(),
        level: ev.level.code(),
        message: ev.message.clone(),
        payload: Some(payload.to_owned()),
        timestamp_ms: ev.timestamp_ms,
        stage: ev.stage.clone(),
    };
    let mut out = vec![VERSION_1];
    bincode::serde::encode_into_std_write(&rec, &mut out, config())
        .expect("bincode encoding into a Vec is infallible");
    out
}

pub fn decode(id: EventId, bytes: &[u8]) -> Result<Event, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty { id })?;
    if version != VERSION_1 {
        return Err(DecodeError::UnknownVersion { id, version });
    }
    let damaged = |reason: String| DecodeError::Damaged { id, reason };
    // Borrowed: every length is checked against the record's bytes before anything is copied.
    // (The owned decode allocates what a length prefix says first: a damaged prefix asked for
    // exabytes and aborted the process.)
    let (rec, used): (RecordV1Ref<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, config())
            .map_err(|e| damaged(e.to_string()))?;
    if used != body.len() {
        return Err(damaged(format!(
            "{} trailing bytes",
            body.len().saturating_sub(used)
        )));
    }
    let kind = Kind::from_code(rec.kind)
        .ok_or_else(|| damaged(format!("unknown kind code {}", rec.kind)))?;
    let level = Level::from_code(rec.level)
        .ok_or_else(|| damaged(format!("unknown level code {}", rec.level)))?;
    let payload = match rec.payload {
        None => None,
        Some(text) => Some(
            serde_json::from_str(text).map_err(|e| damaged(format!("payload is not JSON: {e}")))?,
        ),
    };
    Ok(Event {
        id,
        job: JobId::from_u128(rec.job),
        kind,
        level,
        message: rec.message.to_owned(),
        payload,
        timestamp_ms: rec.timestamp_ms,
        stage: rec.stage.map(str::to_owned),
    })
}

/// What the start-up replay needs of a record, read without copying its strings or parsing its
/// payload's JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Head<'a> {
    pub job: JobId,
    pub kind: Kind,
    pub timestamp_ms: i64,
    /// The payload's JSON text, unparsed.
    pub payload: Option<&'a str>,
}

/// Decodes a record's [`Head`] (same checks as [`decode`], but the payload is not parsed).
pub fn decode_head(id: EventId, bytes: &[u8]) -> Result<Head<'_>, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty { id })?;
    if version != VERSION_1 {
        return Err(DecodeError::UnknownVersion { id, version });
    }
    let damaged = |reason: String| DecodeError::Damaged { id, reason };
    let (rec, used): (RecordV1Ref<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, config())
            .map_err(|e| damaged(e.to_string()))?;
    if used != body.len() {
        return Err(damaged(format!("{} trailing bytes", body.len() - used)));
    }
    let kind = Kind::from_code(rec.kind)
        .ok_or_else(|| damaged(format!("unknown kind code {}", rec.kind)))?;
    Level::from_code(rec.level)
        .ok_or_else(|| damaged(format!("unknown level code {}", rec.level)))?;
    Ok(Head {
        job: JobId::from_u128(rec.job),
        kind,
        timestamp_ms: rec.timestamp_ms,
        payload: rec.payload,
    })
}

/// Appends the seed's wire JSON of a stored record to `out` without building a `serde_json::Value`:
/// the payload is stored as JSON text and is copied through as is. Returns the record's job.
pub fn write_wire(id: EventId, bytes: &[u8], out: &mut Vec<u8>) -> Result<JobId, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty { id })?;
    if version != VERSION_1 {
        return Err(DecodeError::UnknownVersion { id, version });
    }
    let damaged = |reason: String| DecodeError::Damaged { id, reason };
    let (rec, used): (RecordV1Ref<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, config())
            .map_err(|e| damaged(e.to_string()))?;
    if used != body.len() {
        return Err(damaged(format!("{} trailing bytes", body.len() - used)));
    }
    let kind = Kind::from_code(rec.kind)
        .ok_or_else(|| damaged(format!("unknown kind code {}", rec.kind)))?;
    let level = Level::from_code(rec.level)
        .ok_or_else(|| damaged(format!("unknown level code {}", rec.level)))?;
    use std::io::Write;
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"id\":{id},\"type\":\"{}\",\"level\":\"{}\",\"message\":",
        kind.as_str(),
        level.as_str()
    );
    let _ = serde_json::to_writer(&mut *out, rec.message);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(rec.payload.unwrap_or("null").as_bytes());
    let ts = rec.timestamp_ms;
    let _ = write!(
        out,
        ",\"timestamp\":{}{}.{:03}}}",
        if ts < 0 { "-" } else { "" },
        ts.unsigned_abs() / 1000,
        ts.unsigned_abs() % 1000
    );
    Ok(JobId::from_u128(rec.job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        Event {
            id: 7,
            job: JobId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            kind: Kind::Log,
            level: Level::Info,
            message: "Rendering final video with subtitles...".into(),
            payload: Some(json!({"color": "yellow"})),
            timestamp_ms: 1_710_499_845_789,
            stage: Some("render".into()),
        }
    }

    /// Version-1 bytes as they were first written. If this fails, old databases no longer open.
    const GOLDEN_V1: &[u8] = &[
        1, 254, 239, 205, 171, 137, 103, 69, 35, 1, 239, 205, 171, 137, 103, 69, 35, 1, 3, 1, 39,
        82, 101, 110, 100, 101, 114, 105, 110, 103, 32, 102, 105, 110, 97, 108, 32, 118, 105, 100,
        101, 111, 32, 119, 105, 116, 104, 32, 115, 117, 98, 116, 105, 116, 108, 101, 115, 46, 46,
        46, 1, 18, 123, 34, 99, 111, 108, 111, 114, 34, 58, 34, 121, 101, 108, 108, 111, 119, 34,
        125, 253, 58, 173, 120, 131, 28, 3, 0, 0, 1, 6, 114, 101, 110, 100, 101, 114,
    ];

    #[test]
    fn version_1_golden_bytes_still_decode() {
        assert_eq!(decode(7, GOLDEN_V1).unwrap(), sample());
    }

    #[test]
    fn kind_codes_never_change_and_webhook_records_round_trip() {
        let codes: Vec<(Kind, u8)> = Kind::ALL.iter().map(|k| (*k, k.code())).collect();
        assert_eq!(
            codes,
            vec![
                (Kind::Queued, 1),
                (Kind::Running, 2),
                (Kind::Log, 3),
                (Kind::Progress, 4),
                (Kind::Error, 5),
                (Kind::CancelRequested, 6),
                (Kind::Cancelled, 7),
                (Kind::Complete, 8),
                (Kind::Metadata, 9),
                (Kind::Admin, 10),
                (Kind::StageCompleted, 11),
                (Kind::Webhook, 12),
            ]
        );
        let mut hook = sample();
        hook.kind = Kind::Webhook;
        hook.payload = Some(json!({"eventId": 6, "outcome": "delivered", "status": 200}));
        let bytes = encode(&hook);
        assert_eq!(bytes[..17], GOLDEN_V1[..17], "version and job as before");
        assert_eq!(decode(7, &bytes).unwrap(), hook);
        let mut out = Vec::new();
        write_wire(7, &bytes, &mut out).unwrap();
        let wire: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(wire["type"], "webhook");
    }

    #[test]
    fn encoding_is_stable() {
        assert_eq!(encode(&sample()), GOLDEN_V1);
    }

    #[test]
    fn stage_completed_is_stored_as_code_11_beside_the_old_codes() {
        let mut ev = sample();
        ev.kind = Kind::StageCompleted;
        ev.payload = Some(json!({"stage": "voice", "result": {"bytes": 1, "sha256": "ab"}}));
        let bytes = encode(&ev);
        // Version byte, then the job id (a 17-byte varint), then the kind code.
        assert_eq!(bytes[18], 11);
        assert_eq!(GOLDEN_V1[18], 3, "log keeps its code");
        assert_eq!(decode(7, &bytes).unwrap(), ev);
        let mut out = Vec::new();
        write_wire(7, &bytes, &mut out).unwrap();
        let wire: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(wire["type"], "stage_completed");
    }

    #[test]
    fn the_head_matches_the_full_decode() {
        let ev = sample();
        let bytes = encode(&ev);
        let h = decode_head(ev.id, &bytes).unwrap();
        assert_eq!(
            (h.job, h.kind, h.timestamp_ms),
            (ev.job, ev.kind, ev.timestamp_ms)
        );
        assert_eq!(h.payload, Some(r#"{"color":"yellow"}"#));
        for cut in 1..bytes.len() {
            let err = decode_head(3, &bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains("record 3"), "{err}");
        }
    }

    #[test]
    fn wire_writer_matches_the_value_path() {
        let ev = sample();
        let mut out = Vec::new();
        let job = write_wire(ev.id, &encode(&ev), &mut out).unwrap();
        assert_eq!(job, ev.job);
        let fast: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(fast, ev.to_wire());
        let mut bare = ev.clone();
        bare.payload = None;
        bare.message = "quote \" backslash \\ newline \n {braces} 日本".into();
        bare.timestamp_ms = 1_000;
        let mut out = Vec::new();
        write_wire(bare.id, &encode(&bare), &mut out).unwrap();
        let fast: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(fast, bare.to_wire());
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("\"timestamp\":1.000}"));
    }

    #[test]
    fn damaged_records_name_themselves_and_never_panic() {
        let good = encode(&sample());
        assert!(matches!(decode(9, &[]), Err(DecodeError::Empty { id: 9 })));
        assert!(matches!(
            decode(9, &[2, 0, 0]),
            Err(DecodeError::UnknownVersion { id: 9, version: 2 })
        ));
        for cut in 1..good.len() {
            let err = decode(11, &good[..cut]).unwrap_err();
            assert!(err.to_string().contains("record 11"), "{err}");
            let err = write_wire(11, &good[..cut], &mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("record 11"), "{err}");
        }
        let mut flipped = good.clone();
        for i in 1..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = decode(12, &flipped);
            flipped[i] ^= 0xff;
        }
        let mut trailing = good;
        trailing.push(0);
        assert!(decode(13, &trailing).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        fn text(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
        }

        /// JSON values whose text round-trips exactly (floats are small dyadic fractions).
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
                text(12).prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((text(8), inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn event() -> impl Strategy<Value = Event> {
            (
                any::<u64>(),
                any::<u128>(),
                prop::sample::select(Kind::ALL.to_vec()),
                prop::sample::select(vec![
                    Level::Info,
                    Level::Success,
                    Level::Warning,
                    Level::Error,
                ]),
                text(40),
                prop::option::of(json_value()),
                any::<i64>(),
                prop::option::of(text(12)),
            )
                .prop_map(
                    |(id, job, kind, level, message, payload, timestamp_ms, stage)| Event {
                        id,
                        job: JobId::from_u128(job),
                        kind,
                        level,
                        message,
                        payload,
                        timestamp_ms,
                        stage,
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// encode then decode gives the event back; the head and the wire JSON agree with it.
            #[test]
            fn records_round_trip(ev in event()) {
                let bytes = encode(&ev);
                prop_assert_eq!(decode(ev.id, &bytes).unwrap(), ev.clone());
                let head = decode_head(ev.id, &bytes).unwrap();
                prop_assert_eq!((head.job, head.kind, head.timestamp_ms), (ev.job, ev.kind, ev.timestamp_ms));
                let mut out = Vec::new();
                prop_assert_eq!(write_wire(ev.id, &bytes, &mut out).unwrap(), ev.job);
                let wire: Value = serde_json::from_slice(&out).unwrap();
                prop_assert_eq!(&wire["id"], &Value::from(ev.id));
                prop_assert_eq!(&wire["type"], ev.kind.as_str());
                prop_assert_eq!(&wire["level"], ev.level.as_str());
                prop_assert_eq!(&wire["message"], &Value::String(ev.message.clone()));
                prop_assert_eq!(&wire["payload"], ev.payload.as_ref().unwrap_or(&Value::Null));
                prop_assert!(wire["timestamp"].is_number());
            }

            /// Arbitrary bytes are an error naming the record (or, by chance, a record), never a
            /// panic; what decodes also gives a head and valid wire JSON.
            #[test]
            fn arbitrary_bytes_never_panic(id in any::<u64>(), version_1 in any::<bool>(), mut bytes in prop::collection::vec(any::<u8>(), 0..96)) {
                if version_1 && !bytes.is_empty() {
                    bytes[0] = VERSION_1;
                }
                let named = format!("event record {id} ");
                match decode(id, &bytes) {
                    Ok(ev) => {
                        prop_assert_eq!(ev.id, id);
                        prop_assert!(decode_head(id, &bytes).is_ok());
                        let mut out = Vec::new();
                        prop_assert!(write_wire(id, &bytes, &mut out).is_ok());
                        prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
                    }
                    Err(e) => prop_assert!(e.to_string().starts_with(&named), "{}", e),
                }
                if let Err(e) = decode_head(id, &bytes) {
                    prop_assert!(e.to_string().starts_with(&named), "{}", e);
                }
                if let Err(e) = write_wire(id, &bytes, &mut Vec::new()) {
                    prop_assert!(e.to_string().starts_with(&named), "{}", e);
                }
            }

            /// A real record with bytes changed or cut off: an error naming it or some record,
            /// never a panic.
            #[test]
            fn damaged_records_never_panic(ev in event(), at in any::<prop::sample::Index>(), xor in 1u8.., cut in any::<bool>()) {
                let mut bytes = encode(&ev);
                let i = at.index(bytes.len());
                if cut {
                    bytes.truncate(i);
                } else {
                    bytes[i] ^= xor;
                }
                let named = format!("event record {} ", ev.id);
                if let Err(e) = decode(ev.id, &bytes) {
                    prop_assert!(e.to_string().starts_with(&named), "{}", e);
                }
                let _ = decode_head(ev.id, &bytes);
                let _ = write_wire(ev.id, &bytes, &mut Vec::new());
            }
        }
    }
}
