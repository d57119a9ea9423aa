//! Guest output is captured per project, bounded per request and per
//! project, and failures are explained in the project's own log.

use crate::common::*;
use switchyard_runtime::{LimitsOverride, LogSource, ProjectId};
use switchyard_test_artifacts as artifacts;

#[tokio::test]
async fn log_floods_are_truncated_per_request_and_bounded_per_project() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (per_request, per_project) = (config.logs.per_request_bytes, config.logs.per_project_bytes);
    let runtime = runtime_with(config, dir.path());
    let hostile = artifacts::read(artifacts::HOSTILE);
    let app = deploy(&runtime, &hostile, "chatty", generous()).await;
    let quiet = deploy(&runtime, &hostile, "quiet", LimitsOverride::default()).await;

    // 4 MiB of output: the request still succeeds.
    assert_eq!(
        get(&app, "/log-flood?kb=4096").await.unwrap().text(),
        "flooded"
    );
    let log = runtime.logs(app.project()).unwrap();
    let records = log.read(0, usize::MAX);
    let guest_bytes: u64 = records
        .iter()
        .filter(|r| r.source == LogSource::Stdout)
        .map(|r| r.message.len() as u64)
        .sum();
    assert!(guest_bytes <= per_request, "{guest_bytes} bytes kept");
    assert!(
        guest_bytes >= per_request - 1024,
        "{guest_bytes} bytes kept"
    );
    let marker = records.last().unwrap();
    assert_eq!(marker.source, LogSource::Host);
    assert!(marker.message.contains("truncated"));

    // Many floods: the project keeps at most its cap.
    for _ in 0..40 {
        get(&app, "/log-flood?kb=128").await.unwrap();
    }
    assert!(
        log.bytes() <= per_project,
        "{} > {per_project}",
        log.bytes()
    );

    // Nothing of it shows up in another project's log.
    get(&quiet, "/ok").await.unwrap();
    assert!(
        runtime
            .logs(&ProjectId::new("quiet").unwrap())
            .is_none_or(|l| l.read(0, 10).is_empty())
    );
}

#[tokio::test]
async fn failures_are_explained_in_the_projects_log() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::HOSTILE),
        "crashy",
        generous(),
    )
    .await;
    get(&app, "/trap").await.unwrap_err();
    let records = runtime.logs(app.project()).unwrap().read(0, 100);
    // The panic message the guest printed, then the host's explanation.
    assert!(
        records
            .iter()
            .any(|r| r.source == LogSource::Stderr && r.message.contains("panics on purpose")),
        "{records:?}"
    );
    let host = records
        .iter()
        .find(|r| r.source == LogSource::Host)
        .unwrap();
    assert!(
        host.message.starts_with("request failed with GUEST_TRAP"),
        "{}",
        host.message
    );
    assert!(host.request_id.starts_with("test-"));
}
