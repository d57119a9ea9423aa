//! The behaviour every [`KvBackend`] must have, as one async test suite.
//!
//! Run it against a fresh or shared backend: it uses namespaces of its own
//! and leaves other namespaces alone. It panics on the first deviation.

#![allow(
    clippy::unwrap_used,
    reason = "a test suite: a call that fails is a test that fails"
)]

use super::{ENTRY_OVERHEAD_BYTES, KeyPage, KvBackend, KvBackendError};
use crate::ids::ProjectId;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const QUOTA: u64 = 1 << 20;

/// Runs the whole contract against `kv`.
pub async fn kv_contract(kv: &dyn KvBackend) {
    values_round_trip(kv).await;
    namespaces_are_isolated(kv).await;
    delete_and_exists(kv).await;
    ttl_expires_and_set_clears_it(kv).await;
    increment_counts_and_checks_type(kv).await;
    increment_is_atomic(kv).await;
    compare_and_swap_is_atomic(kv).await;
    list_keys_by_prefix_in_pages(kv).await;
    quota_is_enforced_and_accounted(kv).await;
    expired_keys_free_their_quota(kv).await;
    many_expired_keys_free_their_quota_at_once(kv).await;
    the_longest_ttl_is_accepted(kv).await;
    purge_empties_one_namespace(kv).await;
}

/// What a key with a value of `value_len` bytes counts against a quota.
fn entry(key: &str, value_len: u64) -> u64 {
    key.len() as u64 + value_len + ENTRY_OVERHEAD_BYTES
}

/// A namespace no other run uses.
fn fresh_ns(tag: &str) -> ProjectId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ProjectId::new(&format!("contract-{tag}-{nanos:x}")).expect("valid namespace")
}

async fn values_round_trip(kv: &dyn KvBackend) {
    let ns = fresh_ns("rt");
    assert_eq!(kv.get(&ns, "missing").await, Ok(None));
    kv.set(&ns, "k", b"v1".to_vec(), None, QUOTA).await.unwrap();
    assert_eq!(kv.get(&ns, "k").await, Ok(Some(b"v1".to_vec())));
    kv.set(&ns, "k", b"v2".to_vec(), None, QUOTA).await.unwrap();
    assert_eq!(kv.get(&ns, "k").await, Ok(Some(b"v2".to_vec())));

    // Keys are opaque strings; values are opaque bytes.
    let odd_keys = [
        "",
        "\0",
        "a/b",
        "../x",
        "ключ",
        "k\u{ffff}",
        &"x".repeat(512),
    ];
    for (i, key) in odd_keys.iter().filter(|k| !k.is_empty()).enumerate() {
        let value = vec![i as u8, 0, 255];
        kv.set(&ns, key, value.clone(), None, QUOTA).await.unwrap();
        assert_eq!(kv.get(&ns, key).await, Ok(Some(value)), "key {key:?}");
    }
    kv.set(&ns, "empty", Vec::new(), None, QUOTA).await.unwrap();
    assert_eq!(kv.get(&ns, "empty").await, Ok(Some(Vec::new())));
}

async fn namespaces_are_isolated(kv: &dyn KvBackend) {
    let a = fresh_ns("a");
    let b = fresh_ns("b");
    kv.set(&a, "secret", b"a's".to_vec(), None, QUOTA)
        .await
        .unwrap();

    let probes = [
        "secret".to_string(),
        format!("{a}:secret"),
        format!("{a}/secret"),
        format!("../{a}/secret"),
        format!("{a}\0secret"),
        "%".to_string(),
        "*".to_string(),
    ];
    for probe in &probes {
        assert_eq!(kv.get(&b, probe).await, Ok(None), "probe {probe:?}");
        assert_eq!(kv.exists(&b, probe).await, Ok(false), "probe {probe:?}");
    }
    assert_eq!(
        kv.list_keys(&b, "", None, 1000).await,
        Ok(KeyPage::default())
    );
    assert_eq!(kv.delete(&b, "secret").await, Ok(false));
    kv.set(&b, "secret", b"b's".to_vec(), None, QUOTA)
        .await
        .unwrap();
    assert_eq!(kv.increment(&b, "n", 1, QUOTA).await, Ok(1));

    assert_eq!(kv.get(&a, "secret").await, Ok(Some(b"a's".to_vec())));
    assert_eq!(kv.get(&a, "n").await, Ok(None));
    assert_eq!(kv.usage(&a).await, Ok(entry("secret", 3)));
}

async fn delete_and_exists(kv: &dyn KvBackend) {
    let ns = fresh_ns("del");
    assert_eq!(kv.exists(&ns, "k").await, Ok(false));
    assert_eq!(kv.delete(&ns, "k").await, Ok(false));
    kv.set(&ns, "k", b"v".to_vec(), None, QUOTA).await.unwrap();
    assert_eq!(kv.exists(&ns, "k").await, Ok(true));
    assert_eq!(kv.delete(&ns, "k").await, Ok(true));
    assert_eq!(kv.exists(&ns, "k").await, Ok(false));
    assert_eq!(kv.get(&ns, "k").await, Ok(None));
    assert_eq!(kv.usage(&ns).await, Ok(0));
}

/// Polls until `key` is gone, failing after `patience`.
async fn wait_until_expired(kv: &dyn KvBackend, ns: &ProjectId, key: &str, patience: Duration) {
    let deadline = Instant::now() + patience;
    while kv.exists(ns, key).await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "{key} did not expire within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ttl_expires_and_set_clears_it(kv: &dyn KvBackend) {
    let ns = fresh_ns("ttl");
    let short = Some(Duration::from_millis(150));
    kv.set(&ns, "brief", b"v".to_vec(), short, QUOTA)
        .await
        .unwrap();
    kv.set(
        &ns,
        "long",
        b"v".to_vec(),
        Some(Duration::from_secs(3600)),
        QUOTA,
    )
    .await
    .unwrap();
    assert_eq!(kv.get(&ns, "brief").await, Ok(Some(b"v".to_vec())));

    // Setting again without a TTL makes the key permanent.
    kv.set(&ns, "made-permanent", b"v".to_vec(), short, QUOTA)
        .await
        .unwrap();
    kv.set(&ns, "made-permanent", b"w".to_vec(), None, QUOTA)
        .await
        .unwrap();

    wait_until_expired(kv, &ns, "brief", Duration::from_secs(5)).await;
    assert_eq!(kv.get(&ns, "brief").await, Ok(None));
    assert_eq!(
        kv.delete(&ns, "brief").await,
        Ok(false),
        "expired keys do not count as deleted"
    );
    let listed = kv.list_keys(&ns, "", None, 100).await.unwrap();
    assert_eq!(listed.keys, ["long", "made-permanent"]);
    assert_eq!(kv.get(&ns, "made-permanent").await, Ok(Some(b"w".to_vec())));
}

async fn increment_counts_and_checks_type(kv: &dyn KvBackend) {
    let ns = fresh_ns("incr");
    assert_eq!(kv.increment(&ns, "n", 5, QUOTA).await, Ok(5));
    assert_eq!(kv.increment(&ns, "n", -7, QUOTA).await, Ok(-2));
    assert_eq!(kv.get(&ns, "n").await, Ok(Some(b"-2".to_vec())));

    kv.set(&ns, "text", b"hello".to_vec(), None, QUOTA)
        .await
        .unwrap();
    assert_eq!(
        kv.increment(&ns, "text", 1, QUOTA).await,
        Err(KvBackendError::NotAnInteger)
    );
    assert_eq!(
        kv.get(&ns, "text").await,
        Ok(Some(b"hello".to_vec())),
        "left unchanged"
    );

    // Only canonical decimal text counts as an integer.
    for odd in ["007", "+1", " 1", "1 ", "-0", "1.0", ""] {
        kv.set(&ns, "odd", odd.as_bytes().to_vec(), None, QUOTA)
            .await
            .unwrap();
        assert_eq!(
            kv.increment(&ns, "odd", 1, QUOTA).await,
            Err(KvBackendError::NotAnInteger),
            "{odd:?}"
        );
    }

    kv.set(&ns, "max", i64::MAX.to_string().into_bytes(), None, QUOTA)
        .await
        .unwrap();
    assert_eq!(
        kv.increment(&ns, "max", 1, QUOTA).await,
        Err(KvBackendError::NotAnInteger)
    );

    // The TTL survives an increment.
    kv.set(
        &ns,
        "ttl",
        b"10".to_vec(),
        Some(Duration::from_millis(200)),
        QUOTA,
    )
    .await
    .unwrap();
    assert_eq!(kv.increment(&ns, "ttl", 1, QUOTA).await, Ok(11));
    wait_until_expired(kv, &ns, "ttl", Duration::from_secs(5)).await;
    assert_eq!(
        kv.increment(&ns, "ttl", 1, QUOTA).await,
        Ok(1),
        "an expired counter restarts"
    );
}

async fn increment_is_atomic(kv: &dyn KvBackend) {
    let ns = fresh_ns("atomic");
    let tasks = (0..25).map(|_| async {
        for _ in 0..8 {
            kv.increment(&ns, "n", 1, QUOTA).await.unwrap();
        }
    });
    futures::future::join_all(tasks).await;
    assert_eq!(kv.get(&ns, "n").await, Ok(Some(b"200".to_vec())));
}

async fn compare_and_swap_is_atomic(kv: &dyn KvBackend) {
    let ns = fresh_ns("cas");
    assert_eq!(
        kv.compare_and_swap(&ns, "k", Some(b"x".to_vec()), b"y".to_vec(), QUOTA)
            .await,
        Ok(false)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "k", None, b"one".to_vec(), QUOTA)
            .await,
        Ok(true)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "k", None, b"two".to_vec(), QUOTA)
            .await,
        Ok(false)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "k", Some(b"nope".to_vec()), b"two".to_vec(), QUOTA)
            .await,
        Ok(false)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "k", Some(b"one".to_vec()), b"two".to_vec(), QUOTA)
            .await,
        Ok(true)
    );
    assert_eq!(kv.get(&ns, "k").await, Ok(Some(b"two".to_vec())));

    // Many contenders, one winner.
    let contenders = (0..20u8).map(|i| {
        let ns = &ns;
        async move {
            kv.compare_and_swap(ns, "lock", None, vec![i], QUOTA)
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(contenders).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1);
}

async fn list_keys_by_prefix_in_pages(kv: &dyn KvBackend) {
    let ns = fresh_ns("list");
    for key in [
        "user:3",
        "user:1",
        "user:2",
        "user:10",
        "users",
        "item:1",
        "user:\u{ff}",
    ] {
        kv.set(&ns, key, b"v".to_vec(), None, QUOTA).await.unwrap();
    }
    let all = kv.list_keys(&ns, "user:", None, 100).await.unwrap();
    assert_eq!(
        all.keys,
        ["user:1", "user:10", "user:2", "user:3", "user:\u{ff}"]
    );
    assert_eq!(all.cursor, None);

    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = kv
            .list_keys(&ns, "user:", cursor.as_deref(), 2)
            .await
            .unwrap();
        assert!(page.keys.len() <= 2);
        pages.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, all.keys);
    assert_eq!(
        kv.list_keys(&ns, "nothing", None, 10).await,
        Ok(KeyPage::default())
    );
    // A cursor from before the prefix lists the prefix only.
    assert_eq!(
        kv.list_keys(&ns, "user:", Some("item:1"), 100)
            .await
            .unwrap()
            .keys,
        all.keys
    );
    assert_eq!(
        kv.list_keys(&ns, "", None, 100).await.unwrap().keys.len(),
        7
    );
}

async fn quota_is_enforced_and_accounted(kv: &dyn KvBackend) {
    let ns = fresh_ns("quota");
    let quota = 2 * entry("a", 85);
    kv.set(&ns, "a", vec![0; 85], None, quota).await.unwrap();
    kv.set(&ns, "b", vec![0; 85], None, quota).await.unwrap();
    assert_eq!(kv.usage(&ns).await, Ok(quota));
    assert_eq!(
        kv.set(&ns, "c", Vec::new(), None, quota).await,
        Err(KvBackendError::QuotaExceeded)
    );
    assert_eq!(
        kv.get(&ns, "c").await,
        Ok(None),
        "a refused write leaves nothing behind"
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "c", None, Vec::new(), quota).await,
        Err(KvBackendError::QuotaExceeded)
    );
    assert_eq!(
        kv.increment(&ns, "n", 1, quota).await,
        Err(KvBackendError::QuotaExceeded)
    );

    // Shrinking is always allowed, and frees room.
    kv.set(&ns, "a", vec![0; 20], None, quota).await.unwrap();
    assert_eq!(kv.usage(&ns).await, Ok(entry("a", 20) + entry("b", 85)));
    kv.set(&ns, "c", Vec::new(), None, quota).await.unwrap();
    assert!(kv.delete(&ns, "b").await.unwrap());
    assert_eq!(kv.usage(&ns).await, Ok(entry("a", 20) + entry("c", 0)));
}

async fn expired_keys_free_their_quota(kv: &dyn KvBackend) {
    let ns = fresh_ns("expquota");
    let quota = entry("old", 97);
    kv.set(
        &ns,
        "old",
        vec![0; 97],
        Some(Duration::from_millis(100)),
        quota,
    )
    .await
    .unwrap();
    wait_until_expired(kv, &ns, "old", Duration::from_secs(5)).await;
    kv.set(&ns, "new", vec![0; 97], None, quota).await.unwrap();
    assert_eq!(kv.get(&ns, "new").await.unwrap().map(|v| v.len()), Some(97));
}

async fn many_expired_keys_free_their_quota_at_once(kv: &dyn KvBackend) {
    let ns = fresh_ns("massexp");
    let quota = 200 * entry("k000", 50);
    for i in 0..200 {
        kv.set(
            &ns,
            &format!("k{i:03}"),
            vec![0; 50],
            Some(Duration::from_millis(50)),
            quota,
        )
        .await
        .unwrap();
    }
    wait_until_expired(kv, &ns, "k199", Duration::from_secs(5)).await;
    // One write needing nearly all of the quota back.
    let big = usize::try_from(quota - entry("big", 0)).unwrap();
    kv.set(&ns, "big", vec![0; big], None, quota).await.unwrap();
    assert_eq!(kv.usage(&ns).await, Ok(quota));
}

async fn the_longest_ttl_is_accepted(kv: &dyn KvBackend) {
    let ns = fresh_ns("longttl");
    kv.set(&ns, "forever", b"v".to_vec(), Some(Duration::MAX), QUOTA)
        .await
        .unwrap();
    assert_eq!(kv.get(&ns, "forever").await, Ok(Some(b"v".to_vec())));
    kv.set(
        &ns,
        "long",
        b"v".to_vec(),
        Some(Duration::from_secs(u64::from(u32::MAX) * 1000)),
        QUOTA,
    )
    .await
    .unwrap();
    assert!(kv.exists(&ns, "long").await.unwrap());
}

async fn purge_empties_one_namespace(kv: &dyn KvBackend) {
    let gone = fresh_ns("purged");
    let kept = fresh_ns("kept");
    for ns in [&gone, &kept] {
        kv.set(ns, "a", b"1".to_vec(), None, QUOTA).await.unwrap();
        kv.set(
            ns,
            "b",
            b"2".to_vec(),
            Some(Duration::from_secs(3600)),
            QUOTA,
        )
        .await
        .unwrap();
    }
    assert_eq!(kv.purge(&gone).await, Ok(2));
    assert_eq!(kv.get(&gone, "a").await, Ok(None));
    assert_eq!(
        kv.list_keys(&gone, "", None, 1000).await,
        Ok(KeyPage::default())
    );
    assert_eq!(kv.usage(&gone).await, Ok(0));
    assert_eq!(kv.purge(&gone).await, Ok(0));
    // The namespace works as new afterwards, and others are untouched.
    assert_eq!(kv.increment(&gone, "a", 5, QUOTA).await, Ok(5));
    assert_eq!(kv.get(&kept, "a").await, Ok(Some(b"1".to_vec())));
    assert_eq!(kv.usage(&kept).await, Ok(entry("a", 1) + entry("b", 1)));
}
