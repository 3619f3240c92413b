//! `GET /api/openapi.json`: the OpenAPI 3.1 document of every route, derived from the route table.
//!
//! Invariant: the document's paths are exactly [`ROUTES`] (template `:id` written `{id}`): each
//! route's operation comes from an exhaustive match on its [`Endpoint`], so a new endpoint does not
//! compile until it is documented, and a unit test checks the two sets are equal. Schemas are JSON
//! Schema 2020-12 (OpenAPI 3.1's dialect); a black-box test validates real answers of every route
//! against them.

use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use super::routes::{Endpoint, Route, ROUTES};
use crate::event::Kind;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(build);
    &DOC
}

/// `/api/jobs/:id` as OpenAPI writes it: `/api/jobs/{id}`.
pub fn openapi_path(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn build() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(openapi_path(route.path))
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "reelsmith",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Turns a subject into a finished vertical short video. MoneyPrinter's API (POST /api/generate, GET /api/jobs/{id}, GET /api/jobs/{id}/events, cancel, models, upload-songs) kept to the letter, plus batch and idempotent submits, media, metrics and this document. Every error body is {\"status\":\"error\",\"message\":...}.",
        },
        "paths": paths,
        "components": { "schemas": schemas() },
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok_json(description: &str, schema: &str) -> (String, Value) {
    (
        "200".into(),
        json!({ "description": description, "content": json_content(schema_ref(schema)) }),
    )
}

fn error(code: &str, description: &str) -> (String, Value) {
    (
        code.into(),
        json!({ "description": description, "content": json_content(schema_ref("Error")) }),
    )
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "The job's id (a UUID).",
            "schema": { "type": "string" } })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn idempotency_header() -> Value {
    json!({ "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "The same key with the same body within 24 hours answers the same job ids and creates nothing; with another body, 409.",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255 } })
}

fn binary(media: &str, description: &str) -> Value {
    json!({ "description": description, "content": { media: { "schema": { "type": "string", "contentEncoding": "binary" } } } })
}

fn last_event_id_header() -> Value {
    json!({ "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "Start after this event id (what a reconnecting EventSource sends).",
            "schema": { "type": "string", "pattern": "^[0-9]+$" } })
}

fn type_query() -> Value {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    query(
        "type",
        &format!(
            "Only these event types, comma-separated ({}).",
            kinds.join(", ")
        ),
        json!({ "type": "string" }),
    )
}

fn event_stream(description: &str) -> (String, Value) {
    (
        "200".into(),
        json!({ "description": description, "content": { "text/event-stream": { "schema": { "type": "string" } } } }),
    )
}

/// An operation's summary, parameters, request body schema and responses by status.
type Parts = (
    &'static str,
    Vec<Value>,
    Option<Value>,
    Vec<(String, Value)>,
);

/// The operation of one route.
fn operation(route: &Route) -> Value {
    let head = route.method == "HEAD";
    let not_found = error("404", "Job not found, or its media is not ready.");
    let (summary, params, body, responses): Parts = match route.endpoint {
            Endpoint::Generate => (
                "Queue a video (MoneyPrinter's endpoint)",
                vec![idempotency_header()],
                Some(schema_ref("GenerateRequest")),
                vec![
                    ok_json("Queued (or, under a replayed Idempotency-Key, the same job).", "GenerateAnswer"),
                    error("400", "A missing or invalid field (the message names it)."),
                    error("409", "The Idempotency-Key was used with another body."),
                    error("413", "The body is over server.max_body_bytes."),
                ],
            ),
            Endpoint::GenerateBatch => (
                "Queue up to 100 videos in one durable commit",
                vec![idempotency_header()],
                Some(schema_ref("BatchRequest")),
                vec![
                    ok_json("All queued, ids in the requests' order.", "BatchAnswer"),
                    error("400", "An invalid request (the message names its index and the field); nothing is queued."),
                    error("409", "The Idempotency-Key was used with another body."),
                    error("413", "The body is too large."),
                ],
            ),
            Endpoint::ListJobs => (
                "Jobs, newest first",
                vec![
                    query("state", "Only jobs in this state.", schema_ref("JobState")),
                    query("limit", "At most this many (1-1000, default 50).", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                    query("before", "Only jobs created before this one (paging: the last job of the previous page).", json!({ "type": "string", "format": "uuid" })),
                ],
                None,
                vec![ok_json("The jobs.", "JobsAnswer"), error("400", "A bad state, limit or before.")],
            ),
            Endpoint::GetJob => (
                "A job's state (MoneyPrinter's endpoint)",
                vec![id_param()],
                None,
                vec![ok_json("The job.", "JobAnswer"), error("404", "Job not found.")],
            ),
            Endpoint::Events => (
                "A job's events after an id, optionally long-polled (MoneyPrinter's endpoint)",
                vec![
                    id_param(),
                    query("after", "Events with a larger id (default 0).", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                    query("limit", "At most this many (1-1000, default 200).", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                    query("wait", "Hold the request up to this many seconds (0-60) until an event commits or the job ends.", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                ],
                None,
                vec![
                    ok_json("The page.", "EventsAnswer"),
                    error("400", "A bad after, limit or wait."),
                    error("404", "Job not found."),
                ],
            ),
            Endpoint::CancelJob => (
                "Cancel a job (a no-op for a finished one)",
                vec![id_param()],
                None,
                vec![ok_json("Cancellation requested.", "CancelAnswer"), error("404", "Job not found.")],
            ),
            Endpoint::CancelActive => (
                "Cancel the running job, else the newest queued one (MoneyPrinter's endpoint)",
                vec![],
                None,
                vec![ok_json("Cancellation requested.", "CancelAnswer"), error("404", "No active job found.")],
            ),
            Endpoint::Models => (
                "The language models on offer (MoneyPrinter's endpoint; status error with the default when the LLM server is down)",
                vec![],
                None,
                vec![ok_json("The models.", "ModelsAnswer")],
            ),
            Endpoint::UploadSongs => (
                "Replace the song library (multipart field songs, .mp3 files)",
                vec![],
                Some(json!({ "type": "object", "properties": { "songs": { "type": "array", "items": { "type": "string", "contentEncoding": "binary" } } } })),
                vec![
                    ok_json("The library was replaced.", "UploadAnswer"),
                    error("400", "No files uploaded, or no MP3 files found."),
                    error("413", "The upload is over server.max_upload_bytes."),
                ],
            ),
            Endpoint::Health => (
                "Liveness and a summary",
                vec![],
                None,
                vec![
                    ok_json("Serving (status ok, or degraded when a media tool is missing).", "Health"),
                    ("503".into(), json!({ "description": "The event log failed; the daemon is restarting.", "content": json_content(schema_ref("Health")) })),
                ],
            ),
            Endpoint::Metrics => (
                "Metrics in the OpenMetrics text format (Prometheus)",
                vec![],
                None,
                vec![(
                    "200".into(),
                    json!({ "description": "The scrape.", "content": { crate::metrics::CONTENT_TYPE: { "schema": { "type": "string" } } } }),
                )],
            ),
            Endpoint::OpenApi => (
                "This document",
                vec![],
                None,
                vec![(
                    "200".into(),
                    json!({ "description": "The OpenAPI 3.1 document.", "content": json_content(json!({ "type": "object", "required": ["openapi", "paths"] })) }),
                )],
            ),
            Endpoint::Video => (
                "The finished MP4, with single-range Range support",
                vec![
                    id_param(),
                    query("download", "Set to 1 to get Content-Disposition: attachment.", json!({ "type": "string" })),
                    json!({ "name": "Range", "in": "header", "required": false, "schema": { "type": "string" } }),
                ],
                None,
                vec![
                    ("200".into(), binary("video/mp4", "The whole video.")),
                    ("206".into(), binary("video/mp4", "The asked range.")),
                    ("416".into(), json!({ "description": "The range is outside the file." })),
                    not_found,
                ],
            ),
            Endpoint::Thumbnail => (
                "A JPEG frame of the finished video",
                vec![id_param()],
                None,
                vec![("200".into(), binary("image/jpeg", "The thumbnail.")), not_found],
            ),
            Endpoint::Subtitles => (
                "The captions as SRT, or WebVTT",
                vec![
                    id_param(),
                    query("format", "srt (default) or vtt.", json!({ "enum": ["srt", "vtt"] })),
                    query("download", "Set to 1 to get Content-Disposition: attachment.", json!({ "type": "string" })),
                ],
                None,
                vec![
                    (
                        "200".into(),
                        json!({ "description": "The captions.", "content": {
                            "application/x-subrip": { "schema": { "type": "string" } },
                            "text/vtt": { "schema": { "type": "string" } },
                        } }),
                    ),
                    error("400", "A format other than srt or vtt."),
                    not_found,
                ],
            ),
            Endpoint::JobStream => (
                "A job's events as server-sent events, ending after its terminal event",
                vec![
                    id_param(),
                    last_event_id_header(),
                    query("after", "Start after this event id (default 0; Last-Event-ID wins).", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                    type_query(),
                ],
                None,
                vec![
                    event_stream("One message per event: id = the event id, data = the event JSON; comment heartbeats when quiet."),
                    ("204".into(), json!({ "description": "The job is finished and the stream's start is past its terminal event (an EventSource stops reconnecting)." })),
                    error("400", "A bad Last-Event-ID, after or type."),
                    error("404", "Job not found."),
                ],
            ),
            Endpoint::AllStream => (
                "Every job's events as server-sent events (for dashboards); data gains jobId (null for the daemon's own)",
                vec![
                    last_event_id_header(),
                    query("after", "Start after this event id (default: now; Last-Event-ID wins).", json!({ "type": "string", "pattern": "^[0-9]+$" })),
                    type_query(),
                ],
                None,
                vec![
                    event_stream("One message per event, until the daemon stops; comment heartbeats when quiet."),
                    error("400", "A bad Last-Event-ID, after or type."),
                ],
            ),
            Endpoint::Retry => (
                "Queue a failed or cancelled job again (a new attempt of the same request)",
                vec![id_param()],
                None,
                vec![
                    ok_json("Queued again.", "RetryAnswer"),
                    error("400", "The job is not failed or cancelled (the message names its state)."),
                    error("404", "Job not found."),
                ],
            ),
            Endpoint::OpenSession => (
                "Give this browser the session cookie (reelsmith_session: HttpOnly, SameSite=Strict, Path=/api/) that opens GET and HEAD for what it fetches without a header: event streams, video, thumbnail, subtitles. Needs the bearer token",
                vec![],
                None,
                vec![
                    ok_json("The cookie is set (Set-Cookie), or the daemon has no token and sets none.", "SessionAnswer"),
                    error("401", "No bearer token, or not this daemon's server.api_token."),
                ],
            ),
            Endpoint::EndSession => (
                "Remove this browser's session cookie (Set-Cookie with Max-Age=0)",
                vec![],
                None,
                vec![
                    ok_json("The cookie is removed.", "SessionAnswer"),
                    error("401", "No bearer token, or not this daemon's server.api_token."),
                ],
            ),
            Endpoint::Page => (
                "The web page (form, job list, job page), from assets compiled into the daemon",
                vec![],
                None,
                vec![("200".into(), json!({ "description": "The page.", "content": { "text/html": { "schema": { "type": "string" } } } }))],
            ),
            Endpoint::Asset => (
                "The page's script and stylesheet (app.js, app.css)",
                vec![json!({ "name": "name", "in": "path", "required": true, "schema": { "enum": ["app.js", "app.css"] } })],
                None,
                vec![
                    ("200".into(), json!({ "description": "The asset.", "content": {
                        "text/javascript": { "schema": { "type": "string" } },
                        "text/css": { "schema": { "type": "string" } },
                    } })),
                    error("404", "No such asset."),
                ],
            ),
        };
    let mut responses: Map<String, Value> = responses.into_iter().collect();
    if head {
        // A HEAD answer has the GET answer's headers and no body.
        for r in responses.values_mut() {
            if let Some(obj) = r.as_object_mut() {
                obj.remove("content");
            }
        }
    } else {
        responses.insert(
            "default".into(),
            json!({ "description": "Any other failure (403/421 from the cross-site guards, 415, 503, 507...).",
                    "content": json_content(schema_ref("Error")) }),
        );
    }
    let mut op = json!({
        "summary": summary,
        "operationId": operation_id(route),
        "parameters": params,
        "responses": responses,
    });
    if let Some(schema) = body {
        let media = if route.endpoint == Endpoint::UploadSongs {
            "multipart/form-data"
        } else {
            "application/json"
        };
        op["requestBody"] = json!({ "required": true, "content": { media: { "schema": schema } } });
    }
    op
}

fn operation_id(route: &Route) -> String {
    let name: String = route
        .path
        .split(['/', '-', ':', '.'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{}{name}", route.method.to_ascii_lowercase())
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn schemas() -> Value {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let str_or_num = json!({ "type": ["string", "number"] });
    let str_or_bool = json!({ "type": ["string", "boolean", "number"] });
    json!({
        "Error": {
            "type": "object",
            "required": ["status", "message"],
            "additionalProperties": false,
            "properties": { "status": { "const": "error" }, "message": { "type": "string" } },
        },
        "JobState": { "enum": ["queued", "running", "completed", "failed", "cancelled"] },
        "Event": {
            "type": "object",
            "description": "The seed's event shape.",
            "required": ["id", "type", "level", "message", "payload", "timestamp"],
            "additionalProperties": false,
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "type": { "enum": kinds },
                "level": { "enum": ["info", "success", "warning", "error"] },
                "message": { "type": "string" },
                "payload": { "type": ["object", "null"] },
                "timestamp": { "type": "number" },
            },
        },
        "Job": {
            "type": "object",
            "required": ["id", "state", "cancelRequested", "resultPath", "errorMessage", "createdAt", "startedAt", "completedAt"],
            "properties": {
                "id": { "type": "string" },
                "state": schema_ref("JobState"),
                "cancelRequested": { "type": "boolean" },
                "resultPath": nullable("string"),
                "errorMessage": nullable("string"),
                "createdAt": { "type": "string" },
                "startedAt": nullable("string"),
                "completedAt": nullable("string"),
                "attempt": { "type": "integer" },
                "maxAttempts": { "type": "integer" },
                "stage": nullable("string"),
                "progress": nullable("number"),
                "lastEventId": { "type": "integer" },
                "subject": nullable("string"),
                "metadata": { "type": ["object", "null"] },
                "owner": { "type": ["object", "null"] },
                "completedStages": { "type": "array", "items": { "type": "string" } },
            },
        },
        "GenerateRequest": {
            "type": "object",
            "description": "MoneyPrinter's fields (numbers and booleans may be strings); unknown fields are accepted and named in warnings.",
            "required": ["videoSubject"],
            "properties": {
                "videoSubject": { "type": "string", "minLength": 1, "maxLength": 500 },
                "aiModel": nullable("string"),
                "voice": nullable("string"),
                "paragraphNumber": str_or_num,
                "customPrompt": nullable("string"),
                "script": nullable("string"),
                "useMusic": str_or_bool,
                "automateYoutubeUpload": str_or_bool,
                "threads": str_or_num,
                "subtitlesPosition": nullable("string"),
                "color": nullable("string"),
                "subtitlesStyle": { "enum": ["classic", "word", "karaoke", null] },
                "aspectRatio": { "enum": ["9:16", "16:9", "1:1", "4:5", null] },
                "webhookUrl": { "type": ["string", "null"], "description": "http:// or https:// URL that gets the job's end (see webhooks in the README)." },
                "footage": { "type": ["array", "null"], "maxItems": 20, "items": { "type": "string" }, "description": "Your own clips, shown in order: absolute paths inside footage.allowed_dirs, or http(s) URLs (fetched through the clip cache, at most footage.download_max_bytes each)." },
                "music": { "type": ["string", "null"], "description": "Your own music (implies useMusic): a song of the library by name, an absolute path inside footage.allowed_dirs, or an http(s) URL." },
                "zipUrl": nullable("string"),
            },
        },
        "GenerateAnswer": {
            "type": "object",
            "required": ["status", "message", "jobId"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "message": { "const": "Video generation queued." },
                "jobId": { "type": "string" },
                "warnings": { "type": "array", "items": { "type": "string" } },
            },
        },
        "BatchRequest": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": { "type": "array", "minItems": 1, "maxItems": 100, "items": schema_ref("GenerateRequest") },
            },
        },
        "BatchAnswer": {
            "type": "object",
            "required": ["status", "message", "jobIds"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "message": { "type": "string" },
                "jobIds": { "type": "array", "items": { "type": "string" } },
                "warnings": { "type": "array", "items": { "type": "string" } },
            },
        },
        "JobAnswer": {
            "type": "object",
            "required": ["status", "job"],
            "additionalProperties": false,
            "properties": { "status": { "const": "success" }, "job": schema_ref("Job") },
        },
        "JobsAnswer": {
            "type": "object",
            "required": ["status", "jobs"],
            "additionalProperties": false,
            "properties": { "status": { "const": "success" }, "jobs": { "type": "array", "items": schema_ref("Job") } },
        },
        "EventsAnswer": {
            "type": "object",
            "required": ["status", "events", "state", "lastEventId", "more"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "events": { "type": "array", "items": schema_ref("Event") },
                "state": { "type": ["string", "null"] },
                "lastEventId": { "type": "integer" },
                "more": { "type": "boolean" },
            },
        },
        "CancelAnswer": {
            "type": "object",
            "required": ["status", "message"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "message": { "const": "Cancellation requested." },
                "jobId": { "type": "string" },
            },
        },
        "SessionAnswer": {
            "type": "object",
            "required": ["status", "message"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "message": { "type": "string" },
            },
        },
        "RetryAnswer": {
            "type": "object",
            "required": ["status", "message", "jobId"],
            "additionalProperties": false,
            "properties": {
                "status": { "const": "success" },
                "message": { "const": "Job queued for retry." },
                "jobId": { "type": "string" },
            },
        },
        "ModelsAnswer": {
            "type": "object",
            "required": ["status", "models", "default"],
            "additionalProperties": false,
            "properties": {
                "status": { "enum": ["success", "error"] },
                "message": { "type": "string" },
                "models": { "type": "array", "items": { "type": "string" } },
                "default": { "type": "string" },
            },
        },
        "UploadAnswer": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": { "const": "success" },
                "message": { "type": "string" },
                "songs": { "type": "array", "items": { "type": "string" } },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptimeSeconds", "lastEventId", "jobs", "missingTools"],
            "properties": {
                "status": { "enum": ["ok", "degraded", "error"] },
                "version": { "type": "string" },
                "uptimeSeconds": { "type": "integer" },
                "lastEventId": { "type": "integer" },
                "jobs": {
                    "type": "object",
                    "required": ["queued", "running", "completed", "failed", "cancelled"],
                    "additionalProperties": { "type": "integer" },
                },
                "missingTools": { "type": "array", "items": { "type": "string" } },
                "message": { "type": "string" },
                "store": {
                    "type": "object",
                    "description": "The store engine; on PostgreSQL also the schema version, this daemon's name and the live daemons with the jobs each runs",
                    "required": ["engine", "schemaVersion"],
                    "properties": {
                        "engine": { "enum": ["redb", "postgres"] },
                        "schemaVersion": { "type": "integer" },
                        "daemon": { "type": "string" },
                        "reachable": { "type": "boolean" },
                        "daemons": { "type": "array", "items": {
                            "type": "object",
                            "required": ["name", "host", "pid", "heartbeatMs", "running"],
                        } },
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), openapi_path(r.path)))
            .collect();
        assert_eq!(documented, served);
        // Every reference names a schema that exists; every operation id is unique.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "{name}");
        }
        let ids: Vec<String> = ROUTES.iter().map(operation_id).collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        assert_eq!(
            openapi_path("/api/jobs/:id/events"),
            "/api/jobs/{id}/events"
        );
    }
}
