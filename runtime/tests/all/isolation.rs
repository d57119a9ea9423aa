//! Tenant A's kv data is invisible to tenant B, whatever keys B tries.

use crate::common::*;
use switchyard_runtime::LimitsOverride;
use switchyard_test_artifacts as artifacts;

fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn one_tenants_keys_are_invisible_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let hostile = artifacts::read(artifacts::HOSTILE);
    // Same component, two projects.
    let a = deploy(&runtime, &hostile, "tenant-a", LimitsOverride::default()).await;
    let b = deploy(&runtime, &hostile, "tenant-b", LimitsOverride::default()).await;

    let set = get(&a, "/kv?op=set&key=secret&value=a-private")
        .await
        .unwrap();
    assert_eq!(set.json(), "set");

    let probes = [
        "secret",
        "tenant-a:secret",
        "tenant-a/secret",
        "../tenant-a/secret",
        "tenant-a\0secret",
        "tenant-a",
        "%",
        "*",
        "secret\0",
        " secret",
    ];
    for probe in probes {
        let reply = get(&b, &format!("/kv?op=get&key={}", encode(probe)))
            .await
            .unwrap();
        assert_eq!(reply.json(), serde_json::Value::Null, "B read {probe:?}");
    }
    for prefix in ["", "s", "tenant-a", "%"] {
        let reply = get(&b, &format!("/kv?op=list&key={}", encode(prefix)))
            .await
            .unwrap();
        assert_eq!(reply.json(), serde_json::json!([]), "B listed {prefix:?}");
    }

    // B writing the same key does not touch A's value.
    get(&b, "/kv?op=set&key=secret&value=b-own").await.unwrap();
    let a_reads = get(&a, "/kv?op=get&key=secret").await.unwrap().json();
    assert_eq!(a_reads, "a-private");
    let b_reads = get(&b, "/kv?op=get&key=secret").await.unwrap().json();
    assert_eq!(b_reads, "b-own");
}
