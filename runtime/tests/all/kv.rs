//! The kv host interface's error paths, seen from a guest.

use crate::common::*;
use switchyard_runtime::LimitsOverride;
use switchyard_test_artifacts as artifacts;

#[tokio::test]
async fn invalid_keys_large_values_and_quota_are_error_values() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        kv_key_bytes: Some(16),
        kv_value_bytes: Some(10),
        // Three entries of 2 + 10 bytes (plus 64 of overhead each) fit.
        kv_quota_bytes: Some(3 * 76),
        ..LimitsOverride::default()
    };
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::HOSTILE),
        "kv-limits",
        limits,
    )
    .await;
    let error_of = |json: serde_json::Value| json["error"].as_str().unwrap_or_default().to_string();

    let empty = get(&app, "/kv?op=get&key=").await.unwrap().json();
    assert!(error_of(empty).starts_with("InvalidKey"));
    let long = get(&app, &format!("/kv?op=get&key={}", "k".repeat(17)))
        .await
        .unwrap()
        .json();
    assert!(error_of(long).contains("the limit is 16"));
    let big = get(&app, "/kv?op=set&key=k&value=0123456789a")
        .await
        .unwrap()
        .json();
    assert_eq!(error_of(big), "ValueTooLarge");

    // The fourth entry does not fit.
    for key in ["k1", "k2", "k3"] {
        let ok = get(&app, &format!("/kv?op=set&key={key}&value=0123456789"))
            .await
            .unwrap();
        assert_eq!(ok.json(), "set");
    }
    let full = get(&app, "/kv?op=set&key=k4&value=0123456789")
        .await
        .unwrap()
        .json();
    assert_eq!(error_of(full), "QuotaExceeded");
}

#[tokio::test]
async fn a_failing_backend_is_unavailable_to_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::read(artifacts::HOSTILE),
        "kv-down",
        LimitsOverride::default(),
    )
    .await;
    assert_eq!(
        get(&app, "/kv?op=set&key=k&value=v").await.unwrap().json(),
        "set"
    );

    // Break the real database underneath: its table disappears.
    let conn = rusqlite::Connection::open(dir.path().join("kv.sqlite")).unwrap();
    conn.execute_batch("DROP TABLE kv").unwrap();
    drop(conn);

    let json = get(&app, "/kv?op=get&key=k").await.unwrap().json();
    assert_eq!(json, serde_json::json!({"error": "Unavailable"}));
}
