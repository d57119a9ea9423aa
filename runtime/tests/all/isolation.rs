//! Tenant A's data is invisible to tenant B: its kv keys, whatever keys B
//! tries, and its memory, when B gets the pool slot A used.

use crate::common::*;
use switchyard_runtime::{LimitsOverride, PoolConfig};
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

#[tokio::test]
async fn a_reused_pool_slot_holds_nothing_of_the_previous_tenant() {
    const MIB: u64 = 1024 * 1024;
    let hostile = artifacts::read(artifacts::HOSTILE);
    // Copy-on-write on and off; freed memory returned to the OS, or kept
    // resident and reset in place.
    for (cow, keep_resident) in [(true, 0), (true, 64 * MIB), (false, 0), (false, 64 * MIB)] {
        let case = format!("copy-on-write {cow}, {keep_resident} bytes kept resident");
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        // One slot of everything: every instance runs in the same memory.
        config.pool = PoolConfig {
            total_component_instances: 1,
            total_memories: 1,
            total_core_instances: 16,
            total_tables: 16,
            memory_keep_resident_bytes: keep_resident,
            memory_init_cow: cow,
            ..PoolConfig::default()
        };
        let runtime = runtime_with(config, dir.path());
        let a = deploy(&runtime, &hostile, "tenant-a", LimitsOverride::default()).await;
        let b = deploy(&runtime, &hostile, "tenant-b", LimitsOverride::default()).await;

        // The scan finds the pattern where it is: 8 MiB of 64-byte blocks.
        let own = get(&a, "/scan?mb=8&fill").await.unwrap().json();
        assert_eq!(own["found"], 8 * MIB / 64, "{case}: {own}");

        let filled = get(&a, "/fill?mb=8").await.unwrap();
        assert_eq!(filled.text(), format!("filled {} bytes", 8 * MIB), "{case}");
        for tenant in [&b, &a] {
            let seen = get(tenant, "/scan?mb=8").await.unwrap().json();
            assert!(seen["bytes"].as_u64().unwrap() >= 8 * MIB, "{case}: {seen}");
            assert_eq!(seen["found"], 0, "{case}: the slot still held the pattern");
        }
    }
}
