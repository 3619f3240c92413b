//! The media routes of a real job on the real daemon: `/api/jobs/:id/video` (whole, ranges, 416,
//! download name), `/thumbnail` (a JPEG) and `/subtitles` (SRT and WebVTT), and their 404s before
//! the job completes.

mod common;

use std::time::Duration;

use common::{http_full, offline_config, Daemon, SMALL_RENDER};
use serde_json::json;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn media_of_a_finished_job_is_served_with_ranges_and_refused_before() {
    let (d, _tmp) = Daemon::start(&offline_config(SMALL_RENDER), &[]);
    let id = d.submit(&json!({
        "videoSubject": "Why octopuses have three hearts",
        "script": "Octopuses have three hearts. Two pump blood through the gills, one through the body.",
    }));

    // Before completion: 404 naming the state, for every media route.
    for what in ["video", "thumbnail", "subtitles"] {
        let (s, v) = d.get(&format!("/api/jobs/{id}/{what}"));
        assert_eq!(s, 404, "{what}: {v}");
        assert_eq!(v["status"], "error");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("not ready") && (m.contains("queued") || m.contains("running")),
            "{m}"
        );
    }
    let (s, v) = d.get("/api/jobs/00000000-0000-4000-8000-000000000000/video");
    assert_eq!((s, v["message"].as_str()), (404, Some("Job not found.")));

    let job = d.wait_for_state(&id, &["completed", "failed"], Duration::from_secs(240));
    assert_eq!(job["state"], "completed", "{job}");
    let on_disk = std::fs::read(job["resultPath"].as_str().unwrap()).unwrap();
    let len = on_disk.len();
    assert!(len > 1000);

    // The whole file.
    let (s, head, body) = http_full(d.addr, "GET", &format!("/api/jobs/{id}/video"), &[], b"");
    assert_eq!(s, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(&head, "content-length"),
        Some(len.to_string().as_str())
    );
    assert!(body == on_disk, "the served video differs from the file");

    // A range in the middle, an open-ended one, a suffix, and one past the end.
    let path = format!("/api/jobs/{id}/video");
    let (s, head, body) = http_full(d.addr, "GET", &path, &[("Range", "bytes=100-199")], b"");
    assert_eq!(s, 206, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 100-199/{len}").as_str())
    );
    assert_eq!(body, on_disk[100..200]);
    let from = len - 10;
    let (s, head, body) = http_full(
        d.addr,
        "GET",
        &path,
        &[("Range", &format!("bytes={from}-"))],
        b"",
    );
    assert_eq!(s, 206);
    assert_eq!(body, on_disk[from..]);
    assert_eq!(header(&head, "content-length"), Some("10"));
    let (s, _, body) = http_full(d.addr, "GET", &path, &[("Range", "bytes=-7")], b"");
    assert_eq!((s, body.as_slice()), (206, &on_disk[len - 7..]));
    let (s, head, _) = http_full(
        d.addr,
        "GET",
        &path,
        &[("Range", &format!("bytes={len}-"))],
        b"",
    );
    assert_eq!(s, 416);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // HEAD: the headers, no body.
    let (s, head, body) = http_full(d.addr, "HEAD", &path, &[], b"");
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(len.to_string().as_str())
    );
    assert!(body.is_empty());
    // A download link names the file after the subject.
    let (s, head, _) = http_full(d.addr, "GET", &format!("{path}?download=1"), &[], b"");
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "content-disposition"),
        Some("attachment; filename=\"why-octopuses-have-three-hearts.mp4\"")
    );

    // Thumbnail: a JPEG, the same bytes the second time (made once).
    let tpath = format!("/api/jobs/{id}/thumbnail");
    let (s, head, jpeg) = http_full(d.addr, "GET", &tpath, &[], b"");
    assert_eq!(s, 200, "{head} {}", String::from_utf8_lossy(&jpeg));
    assert_eq!(header(&head, "content-type"), Some("image/jpeg"));
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "not a JPEG");
    let (_, _, again) = http_full(d.addr, "GET", &tpath, &[], b"");
    assert!(again == jpeg);

    // Subtitles as SRT and WebVTT, with the script's words.
    let spath = format!("/api/jobs/{id}/subtitles");
    let (s, head, srt) = http_full(d.addr, "GET", &spath, &[], b"");
    assert_eq!(s, 200, "{head}");
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("application/x-subrip"));
    let srt = String::from_utf8(srt).unwrap();
    assert!(srt.starts_with("1\n00:00:00,"), "{srt}");
    assert!(
        srt.contains(" --> ") && srt.contains("three hearts"),
        "{srt}"
    );
    let (s, head, vtt) = http_full(d.addr, "GET", &format!("{spath}?format=vtt"), &[], b"");
    assert_eq!(s, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/vtt"));
    let vtt = String::from_utf8(vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:00."), "{vtt}");
    let (s, _, vtt2) = http_full(d.addr, "GET", &spath, &[("Accept", "text/vtt")], b"");
    assert_eq!((s, String::from_utf8(vtt2).unwrap()), (200, vtt));
    let (s, v) = d.get(&format!("{spath}?format=ass"));
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("`format`"));
}
