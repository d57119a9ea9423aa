//! Prometheus metrics for the admin listener's `/metrics`.
//!
//! Every crate records through the `metrics` facade (the runtime records
//! instantiation time and fuel); one process-wide recorder renders them.

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets, in seconds: sub-millisecond to the 10 s guest deadline.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
/// `None` if another recorder was installed first (metrics then go there).
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// One project's request metrics, registered when its route is loaded
/// (each status class on its first use): looking a labelled metric up in
/// the recorder on every request costs more than updating it.
pub struct RequestMeters {
    project: String,
    classes: [OnceLock<Counter>; 5],
    bytes_out: Counter,
}

impl RequestMeters {
    /// The meters of `project`.
    pub fn new(project: &str) -> Self {
        RequestMeters {
            project: project.to_owned(),
            classes: Default::default(),
            bytes_out: metrics::counter!("switchyard_response_bytes_total", "project" => project.to_owned()),
        }
    }

    /// The meters of requests that reached no project.
    pub fn unrouted() -> &'static RequestMeters {
        static UNROUTED: OnceLock<RequestMeters> = OnceLock::new();
        UNROUTED.get_or_init(|| RequestMeters::new("-"))
    }

    /// Counts a response, by its status class.
    pub fn responded(&self, status: u16) {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let index = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[index]
            .get_or_init(|| {
                metrics::counter!(
                    "switchyard_requests_total",
                    "project" => self.project.clone(),
                    "class" => CLASSES[index]
                )
            })
            .increment(1);
    }

    /// The counter of response body bytes, increased as bodies are sent.
    pub fn bytes_out(&self) -> Counter {
        self.bytes_out.clone()
    }
}

/// Time from receiving a request to its response head, all projects.
pub fn request_duration_histogram() -> &'static Histogram {
    static DURATION: OnceLock<Histogram> = OnceLock::new();
    DURATION.get_or_init(|| metrics::histogram!("switchyard_request_duration_seconds"))
}

/// Drains histogram samples into their buckets periodically, as the
/// exporter requires when it runs without its own HTTP listener.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(5));
        loop {
            interval.tick().await;
            handle.run_upkeep();
        }
    })
}

fn describe() {
    metrics::describe_counter!(
        "switchyard_requests_total",
        "Requests by project and status class."
    );
    metrics::describe_histogram!(
        "switchyard_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from receiving a request to sending its response head."
    );
    metrics::describe_counter!(
        "switchyard_response_bytes_total",
        "Response body bytes written to public connections, by project."
    );
    metrics::describe_histogram!(
        "switchyard_instantiate_seconds",
        metrics::Unit::Seconds,
        "Time to instantiate a guest component."
    );
    metrics::describe_counter!(
        "switchyard_fuel_used_total",
        "Fuel consumed by guests, by project."
    );
    metrics::describe_counter!(
        "switchyard_guest_runs_total",
        "Guest runs by project and result code."
    );
    metrics::describe_counter!(
        "switchyard_asset_cache_total",
        "Asset memory-cache lookups by result."
    );
}
