//! The media a job is made of, end to end against the real daemon: the Piper neural voice (the real
//! engine, installed by `.ci/install-piper`), `auto`'s fall-back to espeak-ng, the generated
//! backgrounds, local footage folders, and media brought with the request (local paths under
//! `footage.allowed_dirs`, URLs served by a test server on 127.0.0.1).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const JOB_TIMEOUT: Duration = Duration::from_secs(240);

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn find<'a>(events: &'a [Value], prefix: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no event `{prefix}...` in {:#?}", messages(events)))
}

fn run_job(d: &Daemon, body: Value) -> (String, Value, Vec<Value>) {
    let id = d.submit(&body);
    let job = d.wait_for_state(&id, &["completed", "failed", "cancelled"], JOB_TIMEOUT);
    let events = d.events(&id);
    assert_eq!(
        job["state"],
        "completed",
        "{job}\n{:#?}\nlogs:\n{}",
        messages(&events),
        d.logs()
    );
    (id, job, events)
}

const TWO_SENTENCES: &str =
    "Octopuses have three hearts. Two of them pump blood through the gills, and the third serves the body.";

#[test]
fn piper_speaks_a_job_in_one_process_and_its_events_name_it() {
    require_media_tools();
    let piper = piper_program();
    let cfg = format!(
        "{SMALL_RENDER}[llm]\nprovider = \"offline\"\n[voice]\nprovider = \"piper\"\n[tools]\npiper = \"{piper}\"\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_env(tmp.path(), &cfg, &[], &[("RUST_LOG", "reelsmith=debug")]);
    let (id, job, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": TWO_SENTENCES}),
    );
    let voice = find(&events, "Generating voiceover with ");
    assert_eq!(voice["message"], "Generating voiceover with Piper");
    assert_eq!(voice["payload"]["model"], "en_US-joe-medium");
    // One piper process spoke both sentences.
    let runs = d
        .logs()
        .lines()
        .filter(|l| l.contains("tool started") && l.contains("piper"))
        .count();
    assert_eq!(runs, 1, "{}", d.logs());
    let done = events
        .iter()
        .find(|e| e["type"] == "stage_completed" && e["payload"]["stage"] == "voice")
        .expect("voice completed");
    assert_eq!(done["payload"]["sentences"], 2);
    let seconds = done["payload"]["duration"].as_f64().unwrap_or(0.0);
    assert!((3.0..15.0).contains(&seconds), "voiceover of {seconds} s");
    // It is speech, not silence.
    let out = PathBuf::from(job["resultPath"].as_str().expect("resultPath"));
    let db = mean_volume_db(&out);
    assert!(db > -35.0, "the voice is silent: {db} dB");
    assert!(!id.is_empty());

    // A request names a Piper model with `piper:<name>`; an unknown one is a 400 naming the field.
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": "Three hearts.", "voice": "piper:en_US-joe-medium"}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with Piper"
    );
    let (s, v) = d.post(
        "/api/generate",
        &json!({"videoSubject": "x", "voice": "piper:xx_XX-nobody-low"}),
    );
    assert_eq!(s, 400, "{v}");
    let msg = v["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("voice `piper:xx_XX-nobody-low`") && msg.contains("en_US-joe-medium"),
        "{v}"
    );
}

#[test]
fn auto_uses_piper_when_installed_and_falls_back_to_espeak_saying_so() {
    require_media_tools();
    let piper = piper_program();
    let base = format!("{SMALL_RENDER}[llm]\nprovider = \"offline\"\n");
    let tmp = tempfile::tempdir().unwrap();
    // Without the executable: espeak-ng, and an info event says why.
    let d = Daemon::start_in(
        tmp.path(),
        &format!("{base}[tools]\npiper = \"/nonexistent/bin/piper\"\n"),
        &[],
    );
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": TWO_SENTENCES}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with espeak-ng"
    );
    let note = find(&events, "Voice: ");
    assert_eq!(note["level"], "info");
    assert_eq!(
        note["message"],
        "Voice: espeak-ng (voice.provider = auto): Piper is not installed (tools.piper = \"/nonexistent/bin/piper\" was not found). Install Piper for a natural voice (see the README)."
    );
    assert_eq!(note["payload"]["provider"], "espeak-ng");
    drop(d);

    // With it (and the default voice, American English): Piper.
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(
        tmp.path(),
        &format!("{base}[tools]\npiper = \"{piper}\"\n"),
        &[],
    );
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Octopus hearts", "script": "Three hearts."}),
    );
    assert_eq!(
        find(&events, "Voice: ")["message"],
        "Voice: Piper with the model en_US-joe-medium (voice.provider = auto)."
    );
    // A voice whose language no installed model speaks: espeak-ng, saying so.
    let (_, _, events) = run_job(
        &d,
        json!({"videoSubject": "Coeurs", "script": "Trois coeurs.", "voice": "fr_001"}),
    );
    assert_eq!(
        find(&events, "Generating voiceover with ")["message"],
        "Generating voiceover with espeak-ng"
    );
    assert!(
        find(&events, "Voice: ")["message"]
            .as_str()
            .is_some_and(|m| m
                .contains("Piper has no model for voice `fr_001` (installed: en_US-joe-medium)")),
        "{:#?}",
        messages(&events)
    );
}
