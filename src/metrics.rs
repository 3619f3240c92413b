//! Process-wide metrics, served by `GET /metrics` in the OpenMetrics text format (which Prometheus
//! scrapes) through `prometheus-client`.
//!
//! The instruments live in one static, like the tracing subscriber: the journal, the HTTP layer,
//! the pipeline, the provider calls and the webhook dispatcher each record where the thing happens,
//! without a handle threaded through every layer. Gauges that describe the state (jobs by state,
//! queue depth) are not kept here: they are set from the views at each scrape, so they can never
//! drift from the log. Label values come from closed sets (route templates, stage names, provider
//! names, outcomes), never from request input, so the series stay few.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of the scrape.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's template (`/api/jobs/:id`), or `unmatched`.
    pub route: &'static str,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    queue_depth: Gauge,
    pub events_appended: Counter,
    pub commits: Counter,
    pub commit_events: Histogram,
    pub commit_appends: Histogram,
    pub commit_seconds: Histogram,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_seconds: HistogramFamily<RouteLabels>,
    pub stage_seconds: HistogramFamily<StageLabel>,
    pub render_speed: Histogram,
    pub provider_retries: Family<ProviderLabel, Counter>,
    pub provider_failures: Family<ProviderLabel, Counter>,
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
}

/// Job states, as the `state` label writes them.
const STATES: [&str; 5] = ["queued", "running", "completed", "failed", "cancelled"];
/// Webhook attempt outcomes.
pub const OUTCOMES: [&str; 3] = ["delivered", "failed", "gave_up"];

fn latency() -> Histogram {
    // 100 µs .. ~1.6 min.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

fn stage_time() -> Histogram {
    // 50 ms .. ~14 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            jobs: Family::default(),
            queue_depth: Gauge::default(),
            events_appended: Counter::default(),
            commits: Counter::default(),
            commit_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_appends: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: latency(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency),
            stage_seconds: Family::new_with_constructor(stage_time),
            render_speed: Histogram::new(exponential_buckets(0.125, 2.0, 12)),
            provider_retries: Family::default(),
            provider_failures: Family::default(),
            webhook_deliveries: Family::default(),
        };
        for state in STATES {
            let _ = m.jobs.get_or_create(&StateLabel { state });
        }
        for outcome in OUTCOMES {
            let _ = m
                .webhook_deliveries
                .get_or_create(&OutcomeLabel { outcome });
        }
        let mut m = m;
        let r = &mut m.registry;
        r.register("reelsmith_jobs", "Jobs by state", m.jobs.clone());
        r.register(
            "reelsmith_queue_depth",
            "Queued jobs not yet starting",
            m.queue_depth.clone(),
        );
        r.register(
            "reelsmith_events_appended",
            "Events committed to the log",
            m.events_appended.clone(),
        );
        r.register(
            "reelsmith_journal_commits",
            "Group commits (write transactions) of the journal",
            m.commits.clone(),
        );
        r.register(
            "reelsmith_journal_commit_events",
            "Events per group commit",
            m.commit_events.clone(),
        );
        r.register(
            "reelsmith_journal_commit_appends",
            "Appends (callers answered) per group commit",
            m.commit_appends.clone(),
        );
        r.register(
            "reelsmith_journal_commit_seconds",
            "Time of one durable group commit",
            m.commit_seconds.clone(),
        );
        r.register(
            "reelsmith_http_requests",
            "HTTP requests by route template, method and status",
            m.http_requests.clone(),
        );
        r.register(
            "reelsmith_http_request_seconds",
            "Time to answer an HTTP request (to its head, for streamed bodies)",
            m.http_seconds.clone(),
        );
        r.register(
            "reelsmith_stage_seconds",
            "Time a pipeline stage took",
            m.stage_seconds.clone(),
        );
        r.register(
            "reelsmith_render_speed_ratio",
            "Seconds of video rendered per second of encoding (x real time)",
            m.render_speed.clone(),
        );
        r.register(
            "reelsmith_provider_retries",
            "Retries of calls to outside services",
            m.provider_retries.clone(),
        );
        r.register(
            "reelsmith_provider_failures",
            "Calls to outside services that failed after their retries",
            m.provider_failures.clone(),
        );
        r.register(
            "reelsmith_webhook_deliveries",
            "Webhook attempts by outcome",
            m.webhook_deliveries.clone(),
        );
        m
    }

    /// Records one HTTP request.
    pub fn http(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let method = method.to_string();
        self.http_seconds
            .get_or_create(&RouteLabels {
                route,
                method: method.clone(),
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Records one durable group commit.
    pub fn commit(&self, events: usize, appends: usize, took: Duration) {
        self.commits.inc();
        self.events_appended.inc_by(events as u64);
        self.commit_events.observe(events as f64);
        self.commit_appends.observe(appends as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn stage(&self, stage: &'static str, took: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(took.as_secs_f64());
    }

    pub fn provider_retry(&self, provider: &'static str) {
        self.provider_retries
            .get_or_create(&ProviderLabel { provider })
            .inc();
    }

    pub fn provider_failure(&self, provider: &'static str) {
        self.provider_failures
            .get_or_create(&ProviderLabel { provider })
            .inc();
    }

    pub fn webhook(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The scrape: the state gauges set from `jobs` (count per state, in [`STATES`] order) and
    /// `queue_depth`, then every metric in the text format.
    pub fn render(&self, jobs: [u64; 5], queue_depth: u64) -> String {
        for (state, n) in STATES.into_iter().zip(jobs) {
            self.jobs
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_names_every_family_and_counts_what_was_recorded() {
        let m = Metrics::new();
        m.commit(5, 2, Duration::from_millis(3));
        m.http("/api/jobs/:id", "GET", 404, Duration::from_millis(1));
        m.stage("render", Duration::from_secs(2));
        m.webhook("delivered");
        let text = m.render([1, 2, 3, 4, 5], 1);
        for needle in [
            "reelsmith_jobs{state=\"failed\"} 4",
            "reelsmith_queue_depth 1",
            "reelsmith_events_appended_total 5",
            "reelsmith_journal_commit_events_count 1",
            "reelsmith_http_requests_total{route=\"/api/jobs/:id\",method=\"GET\",status=\"404\"} 1",
            "reelsmith_stage_seconds_count{stage=\"render\"} 1",
            "reelsmith_webhook_deliveries_total{outcome=\"delivered\"} 1",
            "reelsmith_webhook_deliveries_total{outcome=\"gave_up\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }
}
