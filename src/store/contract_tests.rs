//! The store contract's own suite: one set of scenarios, run against both engines (redb in a temp
//! dir; PostgreSQL 15 from Debian, started here in a temp cluster as the `postgres` account when
//! running as root). Two handles on one store stand for two daemons.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::contract::{purged_jobs, AppendRequest, EventStore, Owner, PurgeNote};
use super::local::LocalStore;
use super::postgres::PgStore;
use crate::event::{fold, JobId, JobState, Kind, Level, NewEvent, Refusal};

type Handles = (Arc<dyn EventStore>, Arc<dyn EventStore>);
type Open<'a> = &'a dyn Fn() -> Pin<Box<dyn Future<Output = Handles> + 'a>>;

fn queued() -> NewEvent {
    NewEvent::new(Kind::Queued, Level::Info, "Job queued.")
        .with_payload(json!({ "maxAttempts": 2, "request": { "videoSubject": "octopus" } }))
}

fn req(job: JobId, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        job,
        events,
        epoch: None,
        with_next: false,
    }
}

fn owner(name: &str) -> Owner {
    Owner {
        daemon: name.into(),
        host: "test".into(),
        pid: 1,
    }
}

async fn submit(s: &dyn EventStore) -> JobId {
    let job = JobId::new();
    let out = s.append(vec![req(job, vec![queued()])]).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
    job
}

/// Appends: ids in order, refusals alone, heads equal to the fold of the events.
async fn appends_and_reads(s: &dyn EventStore) {
    let a = submit(s).await;
    let first = s.last_id().await.unwrap();
    let b = JobId::new();
    let complete = NewEvent::new(Kind::Complete, Level::Success, "done");
    let out = s
        .append(vec![
            req(b, vec![queued(), NewEvent::info("hello")]),
            req(a, vec![complete]),
            req(JobId::new(), vec![NewEvent::info("nobody")]),
            req(a, vec![NewEvent::info("legal")]),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &vec![first + 1, first + 2]);
    assert!(matches!(out[1], Err(Refusal::Illegal(_))));
    assert!(matches!(out[2], Err(Refusal::UnknownJob(_))));
    assert_eq!(out[3].as_ref().unwrap(), &vec![first + 3]);
    assert_eq!(s.last_id().await.unwrap(), first + 3);

    let ev_a = s.read_job(a, 0, 100).await.unwrap();
    assert_eq!(ev_a.len(), 2);
    assert_eq!(s.read_job(b, first + 1, 100).await.unwrap().len(), 1);
    assert_eq!(s.read_job(b, 0, 1).await.unwrap().len(), 1);
    let since = s.read_since(first, 100).await.unwrap();
    let ids: Vec<_> = since.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![first + 1, first + 2, first + 3]);

    // The stored head is the fold of the job's events.
    for job in [a, b] {
        let events = s.read_job(job, 0, 1000).await.unwrap();
        let rebuilt = fold(&events).unwrap();
        assert_eq!(s.head(job).await.unwrap().unwrap(), rebuilt);
    }
    assert!(s.head(JobId::new()).await.unwrap().is_none());
}

fn keyed(key: &str, index: u32, count: u32) -> NewEvent {
    NewEvent::new(Kind::Queued, Level::Info, "Job queued.").with_payload(json!({
        "maxAttempts": 2,
        "request": { "videoSubject": "octopus" },
        "idempotency": { "key": key, "digest": "d", "index": index, "count": count },
    }))
}

fn joined(mut r: AppendRequest) -> AppendRequest {
    r.with_next = true;
    r
}

/// Units (a batch submit's appends) are all or none, and an idempotency key binds one submit,
/// whichever daemon took it: both checked inside the write transaction.
async fn units_and_keys((s1, s2): (&dyn EventStore, &dyn EventStore)) {
    let before = s1.last_id().await.unwrap();
    let (lone, a, b) = (JobId::new(), JobId::new(), JobId::new());
    let done = NewEvent::new(Kind::Complete, Level::Success, "done");
    let out = s1
        .append(vec![
            req(lone, vec![queued()]),
            joined(req(a, vec![queued()])),
            req(b, vec![done]),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &vec![before + 1]);
    for o in &out[1..] {
        assert!(
            matches!(o, Err(Refusal::InBatch { index: 1, source }) if matches!(**source, Refusal::UnknownJob(_) | Refusal::Illegal(_))),
            "{out:?}"
        );
    }
    assert!(
        s1.head(a).await.unwrap().is_none(),
        "none of the unit is written"
    );
    assert_eq!(s2.last_id().await.unwrap(), before + 1);

    // One key, one submit: on the other daemon, and in one batch, a second use is refused whole.
    let (k1, k2) = (JobId::new(), JobId::new());
    let out = s1
        .append(vec![
            joined(req(k1, vec![keyed("k", 0, 2)])),
            req(k2, vec![keyed("k", 1, 2)]),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.is_ok()), "{out:?}");
    let again = s2
        .append(vec![req(JobId::new(), vec![keyed("k", 0, 1)])])
        .await
        .unwrap();
    assert_eq!(again, vec![Err(Refusal::KeyInUse { key: "k".into() })]);
    let (m1, m2, m3) = (JobId::new(), JobId::new(), JobId::new());
    let out = s2
        .append(vec![
            req(m1, vec![keyed("m", 0, 1)]),
            joined(req(m2, vec![keyed("m", 0, 2)])),
            req(m3, vec![keyed("m", 1, 2)]),
        ])
        .await
        .unwrap();
    assert!(out[0].is_ok(), "{out:?}");
    assert!(
        out[1..]
            .iter()
            .all(|o| o == &Err(Refusal::KeyInUse { key: "m".into() })),
        "{out:?}"
    );
    assert!(s1.head(m2).await.unwrap().is_none());
}

async fn lists_newest_first(s: &dyn EventStore) {
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(submit(s).await);
    }
    let cancel = vec![
        NewEvent::new(
            Kind::CancelRequested,
            Level::Warning,
            "Cancellation requested.",
        ),
        NewEvent::new(
            Kind::Cancelled,
            Level::Warning,
            "Job cancelled before execution.",
        ),
    ];
    let out = s.append(vec![req(jobs[1], cancel)]).await.unwrap();
    assert!(out[0].is_ok());
    let page = s.list(None, None, 3).await.unwrap();
    let ids: Vec<_> = page.iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![jobs[4], jobs[3], jobs[2]]);
    let next = s.list(None, Some(page[2].first_event_id), 2).await.unwrap();
    assert_eq!(next[0].id, jobs[1]);
    let cancelled = s.list(Some(JobState::Cancelled), None, 10).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id, jobs[1]);
}

/// Two daemons claim from one queue: every job once, oldest first; leases fence stale runners.
async fn claims_leases_and_rescue((s1, s2): Handles) {
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(submit(s1.as_ref()).await);
    }
    let (o1, o2) = (owner("one"), owner("two"));
    let lease = Duration::from_secs(30);
    let claim_all = |s: Arc<dyn EventStore>, o: Owner| async move {
        let mut got = Vec::new();
        while let Some(c) = s.claim(&o, lease).await.unwrap() {
            assert_eq!(c.view.state, JobState::Running);
            assert_eq!(c.epoch, 1);
            got.push(c.view.id);
        }
        got
    };
    let (g1, g2) = tokio::join!(claim_all(s1.clone(), o1.clone()), claim_all(s2.clone(), o2));
    let mut all: Vec<_> = g1.iter().chain(g2.iter()).copied().collect();
    assert_eq!(all.len(), 6, "every job claimed once: {g1:?} {g2:?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6);
    // Oldest first within one claimant.
    let pos = |j: &JobId| jobs.iter().position(|x| x == j).unwrap();
    assert!(g1.windows(2).all(|w| pos(&w[0]) < pos(&w[1])));

    // The runner of attempt 1 may write; renewals hold.
    let job = g1.first().or(g2.first()).copied().unwrap();
    let progress = AppendRequest {
        job,
        events: vec![NewEvent::progress(0.5)],
        epoch: Some(1),
        with_next: false,
    };
    assert!(s1.append(vec![progress.clone()]).await.unwrap()[0].is_ok());
    assert!(s1.renew(job, 1, lease).await.unwrap());
    assert!(!s1.renew(job, 2, lease).await.unwrap());

    // An expired lease is rescued by any daemon: interrupted and re-queued with a new epoch.
    assert!(s1.renew(job, 1, Duration::ZERO).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let rescued = loop {
        let r = s2.rescue_expired().await.unwrap();
        if !r.is_empty() || Instant::now() > deadline {
            break r;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(rescued, vec![job]);
    let head = s2.head(job).await.unwrap().unwrap();
    assert_eq!(head.state, JobState::Queued);
    let events = s2.read_job(job, 0, 100).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.message.starts_with("Job interrupted: daemon ")
            && e.message.ends_with(" stopped renewing its lease.")));
    // The stale runner can no longer write, nor renew.
    let refused = s1.append(vec![progress]).await.unwrap();
    assert!(
        matches!(refused[0], Err(Refusal::StaleEpoch { .. })),
        "{refused:?}"
    );
    assert!(!s1.renew(job, 1, lease).await.unwrap());
    // The next claim runs attempt 2.
    let again = s2.claim(&owner("two"), lease).await.unwrap().unwrap();
    assert_eq!((again.view.id, again.epoch), (job, 2));
    s2.release(job, 2).await.unwrap();
    assert!(!s2.renew(job, 2, lease).await.unwrap());
}

/// A given job is claimed alone, and a new one is created and claimed in one transaction (what
/// `generate` does on a shared store): nobody else ever sees it queued, and its lease is a lease
/// like any other (an expired one is rescued).
async fn claims_a_given_job((s1, s2): Handles) {
    let (o1, o2) = (owner("gen"), owner("two"));
    let lease = Duration::from_secs(30);
    while s2.claim(&o2, lease).await.unwrap().is_some() {}
    let before = s1.last_id().await.unwrap();
    let mine = JobId::new();
    let mut all = s2.subscribe_all();
    all.borrow_and_update();
    let c = s1
        .claim_job(mine, vec![queued()], &o1, lease)
        .await
        .unwrap()
        .expect("a new job is claimed");
    assert_eq!(
        (c.view.id, c.view.state, c.epoch),
        (mine, JobState::Running, 1)
    );
    assert_eq!(c.view.first_event_id, before + 1);
    assert_eq!(
        c.view.last_event_id,
        before + 2,
        "queued and running, one commit"
    );
    assert!(
        s2.claim(&o2, lease).await.unwrap().is_none(),
        "not claimable"
    );
    let evs = s2.read_job(mine, 0, 10).await.unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].payload.as_ref().unwrap()["owner"]["daemon"], "gen");
    assert!(s1
        .claim_job(mine, Vec::new(), &o2, lease)
        .await
        .unwrap()
        .is_none());

    // An existing queued job is claimed by id, ahead of older ones; a cancel-requested one is not,
    // and refused first events write nothing.
    let (old, young, stopped) = (
        submit(s1.as_ref()).await,
        submit(s1.as_ref()).await,
        submit(s1.as_ref()).await,
    );
    let ask = NewEvent::new(
        Kind::CancelRequested,
        Level::Warning,
        "Cancellation requested.",
    );
    assert!(s1.append(vec![req(stopped, vec![ask])]).await.unwrap()[0].is_ok());
    let c = s2
        .claim_job(young, Vec::new(), &o1, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.view.id, c.epoch), (young, 1));
    assert!(s2
        .claim_job(stopped, Vec::new(), &o1, lease)
        .await
        .unwrap()
        .is_none());
    let last = s1.last_id().await.unwrap();
    let stranger = JobId::new();
    let refused = s1
        .claim_job(stranger, vec![NewEvent::info("not a submit")], &o1, lease)
        .await
        .unwrap();
    assert!(refused.is_none());
    assert_eq!(s2.last_id().await.unwrap(), last);
    assert!(s2.head(stranger).await.unwrap().is_none());
    assert_eq!(s2.claim(&o2, lease).await.unwrap().unwrap().view.id, old);

    // Its lease expires like any other: rescued and queued again.
    assert!(s1.renew(mine, 1, Duration::ZERO).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let rescued = loop {
        let r = s2.rescue_expired().await.unwrap();
        if !r.is_empty() || Instant::now() > deadline {
            break r;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(rescued, vec![mine]);
    let evs = s2.read_job(mine, 0, 10).await.unwrap();
    assert!(
        evs.iter()
            .any(|e| e.message == "Job interrupted: daemon gen stopped renewing its lease."),
        "{evs:?}"
    );
}

/// Retention: only finished jobs go, with all their events and heads, in one transaction that
/// also records which (so other daemons' caches drop them); ids stay given out; a second purge
/// of the same jobs, even at the same time from the other daemon, deletes and records nothing.
async fn purges_finished_jobs((s1, s2): Handles) {
    let lease = Duration::from_secs(30);
    let note = |days| PurgeNote {
        older_than_days: days,
        by: json!({ "via": "test" }),
    };
    let cancel = || {
        vec![
            NewEvent::new(
                Kind::CancelRequested,
                Level::Warning,
                "Cancellation requested.",
            ),
            NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            ),
        ]
    };
    let live = submit(s1.as_ref()).await;
    let run = JobId::new();
    s1.claim_job(run, vec![queued()], &owner("one"), lease)
        .await
        .unwrap()
        .unwrap();
    let (done, failed) = (submit(s1.as_ref()).await, submit(s1.as_ref()).await);
    assert!(s1.append(vec![req(done, cancel())]).await.unwrap()[0].is_ok());
    let err = NewEvent::new(Kind::Error, Level::Error, "Failed to render video: boom");
    // A queued job may fail (its start could not be recorded): a finished job all the same.
    assert!(s1.append(vec![req(failed, vec![err])]).await.unwrap()[0].is_ok());
    let before = s1.last_id().await.unwrap();
    let mut all = s2.subscribe_all();
    all.borrow_and_update();

    let p = s1
        .purge(
            vec![live, run, done, failed, JobId::DAEMON, JobId::new()],
            note(3),
        )
        .await
        .unwrap();
    let mut gone = vec![done, failed];
    gone.sort();
    let mut purged = p.jobs.clone();
    purged.sort();
    assert_eq!(purged, gone, "only the finished jobs");
    assert_eq!(p.events, 5);
    assert_eq!(p.recorded, before + 1);
    for j in [done, failed] {
        assert!(s2.head(j).await.unwrap().is_none());
        assert!(s2.read_job(j, 0, 100).await.unwrap().is_empty());
        assert!(s2
            .list(None, None, 1000)
            .await
            .unwrap()
            .iter()
            .all(|v| v.id != j));
    }
    assert_eq!(
        s2.head(live).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(
        s2.head(run).await.unwrap().unwrap().state,
        JobState::Running
    );
    assert_eq!(s2.read_job(live, 0, 100).await.unwrap().len(), 1);
    let record = s2.read_since(before, 100).await.unwrap();
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!(record[0].job, JobId::DAEMON);
    assert_eq!(
        record[0].message,
        "Purged 2 finished job(s) older than 3 day(s)."
    );
    let mut named = purged_jobs(&record[0]).unwrap();
    named.sort();
    assert_eq!(named, gone);
    assert_eq!(record[0].payload.as_ref().unwrap()["by"]["via"], "test");
    tokio::time::timeout(Duration::from_secs(5), all.wait_for(|v| *v >= p.recorded))
        .await
        .expect("the other daemon is woken by the purge")
        .unwrap();

    // Nothing twice; ids go on after the purge's record.
    let again = s2.purge(gone.clone(), note(3)).await.unwrap();
    assert_eq!(again, Default::default());
    assert_eq!(s1.last_id().await.unwrap(), p.recorded);

    // Two daemons purging the same jobs at once: each deleted and recorded once.
    let (x, y) = (submit(s1.as_ref()).await, submit(s1.as_ref()).await);
    for j in [x, y] {
        assert!(s1.append(vec![req(j, cancel())]).await.unwrap()[0].is_ok());
    }
    let mark = s1.last_id().await.unwrap();
    let (a, b) = tokio::join!(s1.purge(vec![x, y], note(0)), s2.purge(vec![y, x], note(0)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.jobs.len() + b.jobs.len(), 2, "{a:?} {b:?}");
    assert_eq!(a.events + b.events, 6);
    let records = s1.read_since(mark, 100).await.unwrap();
    let named: usize = records
        .iter()
        .filter_map(purged_jobs)
        .map(|v| v.len())
        .sum();
    assert_eq!(named, 2, "{records:?}");

    // The newest events purged: their ids are never given out again.
    let newest = submit(s1.as_ref()).await;
    assert!(s1.append(vec![req(newest, cancel())]).await.unwrap()[0].is_ok());
    let top = s1.last_id().await.unwrap();
    let p = s2.purge(vec![newest], note(0)).await.unwrap();
    assert_eq!(p.recorded, top + 1);
    let next = submit(s1.as_ref()).await;
    assert_eq!(
        s2.head(next).await.unwrap().unwrap().first_event_id,
        top + 2
    );
}

/// Pause is cluster state that survives a restart; wake-ups cross handles.
async fn pause_and_wakeups((s1, s2): Handles, reopen: Open<'_>) {
    assert!(!s1.paused().await.unwrap());
    s1.set_paused(true, json!({"via": "test"})).await.unwrap();
    assert!(s2.paused().await.unwrap());
    drop((s1, s2));
    let (s1, s2) = reopen().await;
    assert!(s1.paused().await.unwrap(), "paused survives a restart");
    s1.set_paused(false, json!({"via": "test"})).await.unwrap();
    assert!(!s2.paused().await.unwrap());

    let job = submit(s1.as_ref()).await;
    let mut on_two = s2.subscribe(job);
    let mut any_two = s2.subscribe_all();
    let seen = *on_two.borrow_and_update();
    any_two.borrow_and_update();
    let out = s1
        .append(vec![req(job, vec![NewEvent::info("news")])])
        .await
        .unwrap();
    let id = out[0].as_ref().unwrap()[0];
    tokio::time::timeout(Duration::from_secs(5), on_two.wait_for(|v| *v >= id))
        .await
        .expect("the other handle is woken within 5 s")
        .unwrap();
    assert!(*on_two.borrow() > seen);
    tokio::time::timeout(Duration::from_secs(5), any_two.wait_for(|v| *v >= id))
        .await
        .expect("daemon-wide followers too")
        .unwrap();
}

async fn suite(open: Open<'_>) {
    let (s1, s2) = open().await;
    appends_and_reads(s1.as_ref()).await;
    units_and_keys((s1.as_ref(), s2.as_ref())).await;
    lists_newest_first(s2.as_ref()).await;
    drop((s1, s2));
    let h = open().await;
    claims_leases_and_rescue(h.clone()).await;
    claims_a_given_job(h.clone()).await;
    purges_finished_jobs(h).await;
    pause_and_wakeups(open().await, open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    // One scenario, one file; the 4th call is the reopen inside `pause_and_wakeups` (the 3rd
    // file). One process holds a redb file: the two "daemons" share one handle.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let open = || -> Pin<Box<dyn Future<Output = Handles> + '_>> {
        let i = calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .min(3);
        let path = dir
            .path()
            .join(format!("s{}.redb", if i == 3 { 2 } else { i }));
        Box::pin(async move {
            let s: Arc<dyn EventStore> = Arc::new(LocalStore::open(&path).unwrap());
            (s.clone(), s)
        })
    };
    suite(&open).await;
}

/// The tests' PostgreSQL server (one harness for these and the black-box cluster tests).
#[path = "../../tests/common/pg.rs"]
mod pg;
use pg::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_postgres() {
    let server = PgServer::start();
    let mut urls = Vec::new();
    for i in 0..3 {
        urls.push(server.create_db(&format!("contract{i}")));
    }
    // Each `open()` hands out the next scenario's database; the reopen in `pause_and_wakeups`
    // (the 4th call) reconnects to the 3rd. Two connections stand for two daemons.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let open = || -> Pin<Box<dyn Future<Output = Handles> + '_>> {
        let i = calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .min(3);
        let url = urls[if i == 3 { 2 } else { i }].clone();
        Box::pin(async move {
            let a: Arc<dyn EventStore> = Arc::new(PgStore::connect(&url).await.unwrap());
            let b: Arc<dyn EventStore> = Arc::new(PgStore::connect(&url).await.unwrap());
            (a, b)
        })
    };
    suite(&open).await;
    // Every head the suite left (claims, renewals, rescues, fenced appends, cancels from the
    // other handle) is the fold of its job's events: `store check` rebuilds and compares them.
    // Pages of one and two rows too: the two portals' pages end at every possible place.
    for url in urls {
        let checked = std::thread::spawn(move || {
            [1_000, 1, 2].map(|rows| super::check::check_postgres_paged(&url, rows))
        })
        .join()
        .unwrap();
        let report = checked[0].as_ref().unwrap();
        assert!(report.jobs > 0 && report.events > report.jobs, "{report:?}");
        for other in &checked[1..] {
            assert_eq!(other.as_ref().unwrap(), report);
        }
    }
}

/// Backends of the current database inside a transaction, other than the asking one.
async fn open_transactions(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
             AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// An append's transaction is opened without waiting for `BEGIN` (pipelined with its reads): an
/// append abandoned once that is sent (its caller gone) must not give its connection back to the
/// pool inside the transaction, holding the log head's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_abandoned_mid_transaction_leaves_no_transaction_open() {
    let server = PgServer::start();
    let url = server.create_db("abandoned");
    let s = PgStore::connect(&url).await.unwrap();
    // A first append prepares the statements: the next one sends its BEGIN at its first poll.
    submit(&s).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(open_transactions(&client).await, 0);
    // Polled only until its transaction is open on the server, then left there.
    let mut append = s.append(vec![req(JobId::new(), vec![queued()])]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while open_transactions(&client).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the append's transaction never opened"
        );
        std::future::poll_fn(|cx| {
            assert!(append.as_mut().poll(cx).is_pending(), "the append ended");
            std::task::Poll::Ready(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let until = |want: fn(i64) -> bool, what: &'static str| {
        let client = &client;
        async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !want(open_transactions(client).await) {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    drop(append);
    // Closed within 3 s: below the server's idle-in-transaction timeout (5 s), which would end it
    // anyway.
    until(|n| n == 0, "the abandoned append's transaction stayed open").await;
    let job = submit(&s).await;
    assert_eq!(s.read_job(job, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_schema_newer_than_it_knows() {
    let server = PgServer::start();
    let url = server.create_db("future");
    assert_eq!(
        super::postgres::migrate(&url).await.unwrap(),
        super::postgres::SCHEMA_VERSION
    );
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("UPDATE reelsmith_schema SET version = version + 1")
        .await
        .unwrap();
    let err = PgStore::connect(&url).await.err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("newer than this reelsmith knows"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_redb_history_into_postgres_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::FILE_NAME);
    let mut jobs = Vec::new();
    {
        let s = LocalStore::open(&path).unwrap();
        let lease = Duration::from_secs(30);
        for _ in 0..5 {
            jobs.push(submit(&s).await);
        }
        // running, completed, failed, cancelled, queued (one each), and a paused queue.
        for _ in 0..3 {
            s.claim(&owner("one"), lease).await.unwrap().unwrap();
        }
        let done = NewEvent::new(Kind::Complete, Level::Success, "Video generation complete")
            .with_payload(json!({"outputPath": "/out/a.mp4", "duration": 12.5}));
        let failed = NewEvent::new(Kind::Error, Level::Error, "Failed to render video: boom");
        let cancel = vec![
            NewEvent::new(
                Kind::CancelRequested,
                Level::Warning,
                "Cancellation requested.",
            ),
            NewEvent::new(
                Kind::Cancelled,
                Level::Warning,
                "Job cancelled before execution.",
            ),
        ];
        let out = s
            .append(vec![
                req(jobs[1], vec![done]),
                req(jobs[2], vec![failed]),
                req(jobs[3], cancel),
            ])
            .await
            .unwrap();
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        s.set_paused(true, json!({"via": "test"})).await.unwrap();
    }
    let server = PgServer::start();
    let url = server.create_db("copy");
    let (from, to) = (path.clone(), url.clone());
    let copied = std::thread::spawn(move || super::copy_to_postgres(&from, &to))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(copied.1, 5);
    // The copy's heads (folded by the import) pass the check, which folds them again.
    let to = url.clone();
    let checked = std::thread::spawn(move || super::check::check_postgres(&to))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!((checked.events, checked.jobs), copied);

    let src = LocalStore::open(&path).unwrap();
    let dst = PgStore::connect(&url).await.unwrap();
    assert_eq!(
        copied.0,
        src.read_since(0, 10_000).await.unwrap().len() as u64
    );
    let states: std::collections::HashSet<_> = dst
        .list(None, None, 100)
        .await
        .unwrap()
        .iter()
        .map(|v| v.state.as_str())
        .collect();
    assert_eq!(states.len(), 5, "every state is represented: {states:?}");
    for job in &jobs {
        assert_eq!(
            dst.head(*job).await.unwrap(),
            src.head(*job).await.unwrap(),
            "head of {job}"
        );
        let (a, b) = (
            src.read_job(*job, 0, 1000).await.unwrap(),
            dst.read_job(*job, 0, 1000).await.unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.id, &x.message, x.timestamp_ms),
                (y.id, &y.message, y.timestamp_ms)
            );
        }
    }
    assert!(dst.paused().await.unwrap());
    assert_eq!(dst.last_id().await.unwrap(), src.last_id().await.unwrap());
    // New appends continue the sequence after the copied ids.
    let next = submit(&dst).await;
    let first = dst.head(next).await.unwrap().unwrap().first_event_id;
    assert_eq!(first, src.last_id().await.unwrap() + 1);
    // A second copy into the same (now non-empty) store is refused.
    drop(src);
    let (from, to) = (path.clone(), url.clone());
    let again = std::thread::spawn(move || super::copy_to_postgres(&from, &to))
        .join()
        .unwrap();
    assert!(again.unwrap_err().to_string().contains("not empty"));
    // The job running in the source has nobody renewing it here: its lease is already expired,
    // and the first rescue puts it back in the queue, naming the daemon that ran it.
    assert_eq!(dst.rescue_expired().await.unwrap(), vec![jobs[0]]);
    let head = dst.head(jobs[0]).await.unwrap().unwrap();
    assert_eq!(head.state, JobState::Queued, "{head:?}");
    let evs = dst.read_job(jobs[0], 0, 1000).await.unwrap();
    assert!(
        evs.iter()
            .any(|e| e.message == "Job interrupted: daemon one stopped renewing its lease."),
        "{evs:?}"
    );
    assert!(dst.rescue_expired().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_keeps_the_ids_retention_deleted_unused_and_refuses_a_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::FILE_NAME);
    let gone = {
        let s = LocalStore::open(&path).unwrap();
        submit(&s).await;
        submit(&s).await
    };
    // Retention deleted the newest events (a crash came before its admin event): the log still
    // remembers id 2 as given out.
    {
        let store = super::Store::open(&path).unwrap();
        assert_eq!(store.purge(&[gone]).unwrap(), 1);
    }
    let server = PgServer::start();
    let url = server.create_db("copy_gap");
    let (from, to) = (path.clone(), url.clone());
    let copied = std::thread::spawn(move || super::copy_to_postgres(&from, &to))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(copied, (1, 1));
    let dst = PgStore::connect(&url).await.unwrap();
    assert_eq!(dst.last_id().await.unwrap(), 2);
    let next = submit(&dst).await;
    assert_eq!(dst.head(next).await.unwrap().unwrap().first_event_id, 3);

    // A mistyped source is refused, and neither created nor copied (as an empty history).
    let typo = dir.path().join("typo.redb");
    let (from, to) = (typo.clone(), server.create_db("copy_typo"));
    let err = std::thread::spawn(move || super::copy_to_postgres(&from, &to))
        .join()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no event log at"), "{err}");
    assert!(!typo.exists());
}

fn cancel_events() -> Vec<NewEvent> {
    vec![
        NewEvent::new(
            Kind::CancelRequested,
            Level::Warning,
            "Cancellation requested.",
        ),
        NewEvent::new(
            Kind::Cancelled,
            Level::Warning,
            "Job cancelled before execution.",
        ),
    ]
}

/// A daemon's cache of a shared store: it starts from every job's head columns (no jsonb) and the
/// whole views of the live jobs, the most recently finished ones and a finished job whose
/// idempotency key is in its window; it folds the rest. A job it holds folded that another
/// daemon writes to (a retry) is read whole from the store and updated, and folded again once it
/// ends. Schema version 3's rows get their head columns from migration 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_cache_keeps_live_and_recent_jobs_whole_and_folds_the_others() {
    use crate::cluster::{whole_of, Follower};
    use crate::views::{Cached, Head, Views, RECENT_FINISHED};
    let server = PgServer::start();
    let url = server.create_db("cache");
    let pg = Arc::new(PgStore::connect(&url).await.unwrap());
    let s: &dyn EventStore = pg.as_ref();
    // The keyed job first (the oldest: not among the recent ones), then 290 finished, 5 queued.
    let keyed_job = JobId::new();
    let mut events = vec![keyed("cache-key", 0, 1)];
    events.extend(cancel_events());
    let out = s.append(vec![req(keyed_job, events)]).await.unwrap();
    assert!(out[0].is_ok(), "{out:?}");
    let mut finished = vec![keyed_job];
    for chunk in 0..29 {
        let batch: Vec<AppendRequest> = (0..10)
            .map(|_| {
                let mut events = vec![queued()];
                events.extend(cancel_events());
                req(JobId::new(), events)
            })
            .collect();
        finished.extend(batch.iter().map(|r| r.job));
        let out = s.append(batch).await.unwrap();
        assert!(out.iter().all(|o| o.is_ok()), "chunk {chunk}: {out:?}");
    }
    let mut live = Vec::new();
    for _ in 0..5 {
        live.push(submit(s).await);
    }

    // Schema 3's rows had no head columns: migration 4 fills them from the stored heads.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE jobs DROP COLUMN attempt, DROP COLUMN last_event,
                 DROP COLUMN created_ms, DROP COLUMN completed_ms;
             UPDATE reelsmith_schema SET version = 3",
        )
        .await
        .unwrap();
    drop(pg);
    let pg = Arc::new(PgStore::connect(&url).await.unwrap());
    let s: &dyn EventStore = pg.as_ref();

    let keys_since = crate::event::now_ms() - crate::event::IDEMPOTENCY_WINDOW_MS;
    let start = pg.load_cache(RECENT_FINISHED, keys_since).await.unwrap();
    assert_eq!(start.last, s.last_id().await.unwrap());
    let order: Vec<JobId> = start.heads.iter().map(|(j, _)| *j).collect();
    let mut all = finished.clone();
    all.extend(live.iter().copied());
    assert_eq!(order, all, "heads in creation order");
    for (job, head) in &start.heads {
        let stored = s.head(*job).await.unwrap().unwrap();
        assert_eq!(*head, Head::of(&stored), "job {job}");
    }
    // Live (5), the 256 most recently finished, and the keyed one.
    let whole: std::collections::HashSet<JobId> = start.whole.iter().map(|v| v.id).collect();
    assert_eq!(whole.len(), 5 + RECENT_FINISHED + 1);
    assert!(whole.contains(&keyed_job));
    assert!(live.iter().all(|j| whole.contains(j)));
    let recent = &finished[finished.len() - RECENT_FINISHED..];
    assert!(recent.iter().all(|j| whole.contains(j)));

    let views = Arc::new(Views::from_heads(start.heads, start.whole, start.last));
    assert_eq!(views.whole_len(), 5 + RECENT_FINISHED);
    assert_eq!(views.queue_len(), 5);
    assert_eq!(views.counts().cancelled, 291);
    let now = crate::event::now_ms();
    assert_eq!(
        views.key_use("cache-key", now).map(|k| k.jobs),
        Some(vec![keyed_job])
    );
    let old = finished[1];
    let Some(Cached::Folded(head)) = views.cached(old) else {
        panic!("an old finished job is held folded");
    };
    let read = whole_of(s, old, &head, head.last_event_id).await.unwrap();
    assert_eq!(read, s.head(old).await.unwrap().unwrap());
    assert!(!read.request.is_empty() && read.request.as_ref() != "null");

    // Another daemon retries the folded job: the follower reads it whole and updates it.
    let store: Arc<dyn EventStore> = pg.clone();
    let follower = Follower::new(store, views.clone());
    follower.spawn();
    let other = PgStore::connect(&url).await.unwrap();
    let retry = NewEvent::new(Kind::Queued, Level::Info, "Job queued for retry.")
        .with_payload(json!({ "retry": true, "maxAttempts": 3 }));
    let ids = other.append(vec![req(old, vec![retry])]).await.unwrap();
    let id = *ids[0].as_ref().unwrap().last().unwrap();
    follower.catch_up(id).await;
    let Some(Cached::Whole(v)) = views.cached(old) else {
        panic!("a retried job is whole");
    };
    assert_eq!(*v, s.head(old).await.unwrap().unwrap());
    assert_eq!(v.request, read.request);
    assert_eq!(views.whole_len(), 5 + RECENT_FINISHED + 1);
    assert_eq!(views.queue_len(), 6);
    // It ends again: the oldest of the recent ones is folded, memory stays bounded.
    let ids = other.append(vec![req(old, cancel_events())]).await.unwrap();
    follower
        .catch_up(*ids[0].as_ref().unwrap().last().unwrap())
        .await;
    assert_eq!(
        *views.view(old).unwrap(),
        s.head(old).await.unwrap().unwrap()
    );
    assert_eq!(views.whole_len(), 5 + RECENT_FINISHED);
    assert!(matches!(views.cached(recent[0]), Some(Cached::Folded(_))));
}
