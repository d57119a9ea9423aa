//! Every hostile behaviour ends in its documented code, within its bound,
//! without harming the host or a well-behaved tenant served at the same time.

use crate::common::*;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchyard_runtime::{App, DispatchError, LimitsOverride, Runtime};
use switchyard_test_artifacts as artifacts;

async fn hostile(runtime: &Runtime, project: &str, limits: LimitsOverride) -> Arc<App> {
    deploy(
        runtime,
        &artifacts::read(artifacts::HOSTILE),
        project,
        limits,
    )
    .await
}

fn with_deadline(ms: u64) -> LimitsOverride {
    LimitsOverride {
        wall_clock_ms: Some(ms),
        ..generous()
    }
}

/// Asserts a timeout came no later than the deadline plus one epoch tick
/// (plus scheduling slack), and not before the deadline.
fn assert_timed_out(result: Result<Reply, DispatchError>, elapsed: Duration, deadline_ms: u64) {
    let err = error(result);
    assert!(matches!(err, DispatchError::Timeout), "{err:?}");
    assert_eq!((err.code(), err.status().as_u16()), ("GUEST_TIMEOUT", 503));
    let deadline = Duration::from_millis(deadline_ms);
    eprintln!(
        "timed out {:?} after a {deadline:?} deadline",
        elapsed.saturating_sub(deadline)
    );
    assert!(elapsed >= deadline, "timed out early: {elapsed:?}");
    assert!(
        elapsed <= deadline + TICK + SLACK,
        "timed out late: {elapsed:?}"
    );
}

#[tokio::test]
async fn infinite_loop_in_the_handler_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "spin", with_deadline(300)).await;
    let (result, elapsed) = timed(get(&app, "/spin")).await;
    assert_timed_out(result, elapsed, 300);
}

#[tokio::test]
async fn infinite_loop_in_the_handler_runs_out_of_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        fuel: Some(50_000_000),
        ..LimitsOverride::default()
    };
    let app = hostile(&runtime, "burn", limits).await;
    let (result, elapsed) = timed(get(&app, "/spin")).await;
    eprintln!("50 million units of fuel burnt in {elapsed:?}");
    let err = error(result);
    assert!(matches!(err, DispatchError::CpuExhausted), "{err:?}");
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("GUEST_CPU_EXHAUSTED", 503)
    );
}

#[tokio::test]
async fn infinite_loop_at_instantiation_is_bounded_by_deadline_and_fuel() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let component = artifacts::wat("start-loop", &[]);
    let app = deploy(&runtime, &component, "start-spin", with_deadline(300)).await;
    let (result, elapsed) = timed(get(&app, "/")).await;
    assert_timed_out(result, elapsed, 300);

    let limits = LimitsOverride {
        fuel: Some(10_000_000),
        ..LimitsOverride::default()
    };
    let app = deploy(&runtime, &component, "start-burn", limits).await;
    assert!(matches!(
        error(get(&app, "/").await),
        DispatchError::CpuExhausted
    ));
}

#[tokio::test]
async fn a_guest_blocked_in_the_host_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "sleepy", with_deadline(300)).await;
    let (result, elapsed) = timed(get(&app, "/sleep?ms=60000")).await;
    assert_timed_out(result, elapsed, 300);
}

#[tokio::test]
async fn deep_recursion_traps() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "recurse", generous()).await;
    let err = error(get(&app, "/recurse").await);
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");
    assert_eq!((err.code(), err.status().as_u16()), ("GUEST_TRAP", 500));
    assert!(
        err.detail().unwrap().contains("call stack exhausted"),
        "{:?}",
        err.detail()
    );
}

#[tokio::test]
async fn memory_grow_bomb_hits_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        memory_bytes: Some(32 << 20),
        ..generous()
    };
    let app = hostile(&runtime, "alloc", limits).await;
    let err = error(get(&app, "/alloc").await);
    assert!(matches!(err, DispatchError::Memory { .. }), "{err:?}");
    assert_eq!((err.code(), err.status().as_u16()), ("GUEST_MEMORY", 500));
    // The default limit holds too.
    let app = hostile(&runtime, "alloc-default", generous()).await;
    assert!(matches!(
        error(get(&app, "/alloc").await),
        DispatchError::Memory { .. }
    ));
}

#[tokio::test]
async fn table_grow_bomb_hits_the_table_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = deploy(
        &runtime,
        &artifacts::wat("table-bomb", &[]),
        "tables",
        generous(),
    )
    .await;
    let err = error(get(&app, "/").await);
    assert!(matches!(err, DispatchError::Memory { .. }), "{err:?}");
    assert!(
        err.detail().unwrap().contains("table limit"),
        "{:?}",
        err.detail()
    );
}

#[tokio::test]
async fn memory_is_limited_across_all_of_a_components_memories() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    // 2 × 50 MiB fits in 128 MiB: both grow, then the handler returns
    // without a response.
    let fits = artifacts::wat("two-memories", &[("$A_PAGES", "800"), ("$B_PAGES", "800")]);
    let app = deploy(&runtime, &fits, "two-fit", generous()).await;
    assert!(matches!(
        error(get(&app, "/").await),
        DispatchError::NoResponse
    ));
    // 2 × 70 MiB: each memory is under 128 MiB, together they are not.
    let over = artifacts::wat(
        "two-memories",
        &[("$A_PAGES", "1120"), ("$B_PAGES", "1120")],
    );
    let app = deploy(&runtime, &over, "two-over", generous()).await;
    let err = error(get(&app, "/").await);
    assert!(matches!(err, DispatchError::Memory { .. }), "{err:?}");
}

#[tokio::test]
async fn huge_response_body_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        response_body_bytes: Some(1 << 20),
        ..generous()
    };
    let app = hostile(&runtime, "huge", limits).await;

    // Announced up front: refused before any byte is sent.
    let err = error(get(&app, "/huge-body?mb=3&declared").await);
    assert!(matches!(err, DispatchError::ResponseTooLarge), "{err:?}");
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("RESPONSE_TOO_LARGE", 502)
    );

    // Streamed: the headers went out, so the stream is aborted, not ended.
    let reply = get(&app, "/huge-body?mb=3").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(
        matches!(reply.body, Err(DispatchError::ResponseTooLarge)),
        "{:?}",
        reply.body
    );

    // The default limit (5 MB) holds too.
    let app = hostile(&runtime, "huge-default", generous()).await;
    let reply = get(&app, "/huge-body?mb=6").await.unwrap();
    assert!(matches!(reply.body, Err(DispatchError::ResponseTooLarge)));
    let reply = get(&app, "/huge-body?mb=4").await.unwrap();
    assert_eq!(reply.body.unwrap().len(), 4 << 20);
}

#[tokio::test]
async fn a_trap_after_the_headers_aborts_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "partial", generous()).await;
    let reply = get(&app, "/partial-then-trap").await.unwrap();
    assert_eq!(reply.status, 200);
    let err = reply.body.expect_err("never completed as a success");
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");
}

#[tokio::test]
async fn panics_traps_and_exits_are_guest_traps() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "trap", generous()).await;
    let err = error(get(&app, "/trap").await);
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");
    assert_eq!(err.status().as_u16(), 500);
    // WASI 0.2's exit carries only success or failure, not the code.
    let err = error(get(&app, "/exit").await);
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");
    assert!(
        err.detail().unwrap().contains("called exit("),
        "{:?}",
        err.detail()
    );
}

#[tokio::test]
async fn no_response_and_bad_response() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "silent", generous()).await;
    let err = error(get(&app, "/no-response").await);
    assert!(matches!(err, DispatchError::NoResponse), "{err:?}");
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("GUEST_NO_RESPONSE", 500)
    );

    let err = error(get(&app, "/bad-response").await);
    assert!(matches!(err, DispatchError::BadResponse { .. }), "{err:?}");
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("GUEST_BAD_RESPONSE", 502)
    );
}

#[tokio::test]
async fn header_bombs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    // Thousands of small headers, and one huge value: both pass the size of a
    // header set, which ends the guest.
    let app = hostile(&runtime, "headers", generous()).await;
    for path in ["/header-bomb", "/big-header"] {
        let err = error(get(&app, path).await);
        assert!(
            matches!(err, DispatchError::BadResponse { .. }),
            "{path}: {err:?}"
        );
        assert_eq!(
            (err.code(), err.status().as_u16()),
            ("GUEST_BAD_RESPONSE", 502)
        );
        assert!(
            err.detail().unwrap().contains("header set"),
            "{:?}",
            err.detail()
        );
    }
    // Under a larger header-set limit, the many small headers fit but are
    // more than a response may carry.
    let roomy = LimitsOverride {
        http_field_bytes: Some(4 << 20),
        ..generous()
    };
    let app = hostile(&runtime, "headers-roomy", roomy).await;
    let err = error(get(&app, "/header-bomb").await);
    assert!(matches!(err, DispatchError::BadResponse { .. }), "{err:?}");
    assert!(
        err.detail().unwrap().contains("at most 100 are allowed"),
        "{:?}",
        err.detail()
    );
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        request_body_bytes: Some(1000),
        ..generous()
    };
    let app = hostile(&runtime, "upload", limits).await;

    let ok = send(&app, request("POST", "/body-length", vec![b'x'; 1000]))
        .await
        .unwrap();
    assert_eq!(ok.text(), "1000");

    // Declared too large: refused before the guest runs.
    let err = error(send(&app, request("POST", "/body-length", vec![b'x'; 1001])).await);
    assert!(matches!(err, DispatchError::PayloadTooLarge), "{err:?}");
    assert_eq!(
        (err.code(), err.status().as_u16()),
        ("PAYLOAD_TOO_LARGE", 413)
    );

    // Streamed without a length: the guest's read fails (it never sees a
    // truncated body as complete) and the client gets 413.
    let chunks = (0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            400
        ])))
    });
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let req = http::Request::post("http://app.localhost/body-length")
        .body(body)
        .unwrap();
    let err = error(send(&app, req).await);
    assert!(matches!(err, DispatchError::PayloadTooLarge), "{err:?}");
}

#[tokio::test]
async fn host_memory_a_request_can_hold_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "hoarder", generous()).await;

    // Bodies nobody reads buffer at most two 64 KiB chunks each on the host.
    let accepted: u64 = get(&app, "/body-hoard?bodies=300")
        .await
        .unwrap()
        .text()
        .parse()
        .unwrap();
    let per_body = 2 * 64 * 1024;
    assert!(accepted <= 300 * per_body, "{accepted} bytes buffered");
    assert!(accepted >= 300 * 64 * 1024, "{accepted} bytes buffered");

    // And the number of such bodies is bounded by the handle limit (1024).
    let err = error(get(&app, "/body-hoard?bodies=2000").await);
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");

    // Random bytes come 64 KiB at a time at most.
    assert_eq!(
        get(&app, "/random?bytes=65536").await.unwrap().text(),
        "65536"
    );
    let err = error(get(&app, "/random?bytes=67108864").await);
    assert!(matches!(err, DispatchError::Trap { .. }), "{err:?}");
}

#[tokio::test]
async fn a_tenant_cannot_take_more_than_its_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let limits = LimitsOverride {
        concurrency: Some(2),
        wall_clock_ms: Some(1000),
        ..generous()
    };
    let app = hostile(&runtime, "greedy", limits).await;
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/sleep?ms=60000").await.map(|r| r.status) })
        })
        .collect();
    // Both sleepers hold their slot until their deadline; wait until both
    // have started (each prints once it runs).
    wait_for_lines(&runtime, &app, "sleeping", 2).await;
    let refused = error(get(&app, "/ok").await);
    assert!(matches!(refused, DispatchError::Capacity), "{refused:?}");
    assert_eq!(refused.status().as_u16(), 503);
    for sleeper in sleepers {
        assert!(matches!(
            sleeper.await.unwrap(),
            Err(DispatchError::Timeout)
        ));
    }
    assert_eq!(
        get(&app, "/ok").await.unwrap().text(),
        "ok",
        "slots come back"
    );
    // Another project is not affected by this one's cap.
    let other = hostile(&runtime, "other", generous()).await;
    assert_eq!(get(&other, "/ok").await.unwrap().status, 200);
}

#[tokio::test]
async fn requests_cancelled_during_kv_calls_leave_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "cancelled", generous()).await;
    // Drop requests part-way through a stream of kv writes, at varied points.
    for i in 0..40u64 {
        let cut = Duration::from_millis(1 + i % 15);
        let _ = tokio::time::timeout(cut, get(&app, "/kv-spam")).await;
    }
    // Every reader and the writer are free again: many concurrent calls work.
    let reads = (0..24).map(|_| get(&app, "/kv?op=get&key=spam:0"));
    for reply in futures::future::join_all(reads).await {
        let json = reply.unwrap().json();
        assert!(json.get("error").is_none(), "{json}");
    }
    let json = get(&app, "/kv-spam").await.unwrap().json();
    assert_eq!(json["ok"], 1000);
}

#[tokio::test]
async fn a_request_without_an_authority_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "no-host", generous()).await;
    let req = http::Request::get("/ok")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let err = error(send(&app, req).await);
    assert!(matches!(err, DispatchError::BadRequest { .. }), "{err:?}");
    assert_eq!((err.code(), err.status().as_u16()), ("BAD_REQUEST", 400));
}

#[tokio::test]
async fn kv_spam_is_cut_off_at_the_call_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "spam", generous()).await;
    let (reply, elapsed) = timed(get(&app, "/kv-spam")).await;
    eprintln!("1000 kv writes and 1000 refused calls took {elapsed:?}");
    let json = reply.unwrap().json();
    assert_eq!(
        json,
        serde_json::json!({"ok": 1000, "firstError": "LimitExceeded"})
    );
}

#[tokio::test]
async fn files_sockets_dns_and_outgoing_http_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "escape", generous()).await;
    let json = get(&app, "/escape").await.unwrap().json();
    for attempt in ["file", "dir", "write", "socket", "udp", "dns", "http"] {
        let outcome = json[attempt].as_str().unwrap();
        assert!(outcome.starts_with("error:"), "{attempt}: {outcome}");
    }
    assert!(
        json["http"].as_str().unwrap().contains("HttpRequestDenied"),
        "{json}"
    );
    let log = runtime.logs(app.project()).unwrap().read(0, 100);
    assert!(
        log.iter().any(|r| r
            .message
            .contains("outgoing request to https://example.com/ refused")),
        "{log:?}"
    );
}

/// Every hostile behaviour, started alongside a well-behaved tenant on a
/// tokio runtime with one worker thread: the canary keeps succeeding.
#[test]
fn a_canary_tenant_is_served_while_hostile_guests_run() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(dir.path());
        let canary = deploy(
            &runtime,
            &artifacts::read(artifacts::HELLO),
            "canary",
            LimitsOverride::default(),
        )
        .await;
        // Spinners get a short deadline; the rest the default, since on one
        // worker thread they share it with the spinners.
        let spin_limits = LimitsOverride {
            wall_clock_ms: Some(1500),
            memory_bytes: Some(32 << 20),
            ..generous()
        };
        let spinning = hostile(&runtime, "hostile-spin", spin_limits.clone()).await;
        let working = hostile(&runtime, "hostile-work", generous()).await;
        let start_loop = deploy(
            &runtime,
            &artifacts::wat("start-loop", &[]),
            "start-loop",
            spin_limits,
        )
        .await;

        // Each behaviour with the outcome it must have: a code, or a status.
        let expected = [
            (&spinning, "/spin", "GUEST_TIMEOUT"),
            (&spinning, "/spin", "GUEST_TIMEOUT"),
            (&spinning, "/recurse", "GUEST_TRAP"),
            (&spinning, "/alloc", "GUEST_MEMORY"),
            (&spinning, "/sleep?ms=60000", "GUEST_TIMEOUT"),
            (&spinning, "/trap", "GUEST_TRAP"),
            (&spinning, "/no-response", "GUEST_NO_RESPONSE"),
            (&spinning, "/header-bomb", "GUEST_BAD_RESPONSE"),
            (&working, "/log-flood?kb=4096", "200"),
            (&working, "/kv-spam", "200"),
            (&working, "/escape", "200"),
            (&working, "/huge-body?mb=20", "RESPONSE_TOO_LARGE"),
        ];
        let hostile_requests = expected.map(|(app, path, _)| {
            let app = app.clone();
            tokio::spawn(async move {
                match get(&app, path).await {
                    Ok(Reply { body: Err(e), .. }) | Err(e) => e.code().to_string(),
                    Ok(reply) => reply.status.to_string(),
                }
            })
        });
        let start_loop_request =
            tokio::spawn(async move { get(&start_loop, "/").await.map(|r| r.status) });

        let served = Arc::new(AtomicUsize::new(0));
        let (_, elapsed) = timed(async {
            // Keep the canary busy for as long as the hostile guests run.
            while hostile_requests.iter().any(|h| !h.is_finished()) {
                let reply = get(&canary, "/").await.expect("the canary is served");
                assert_eq!(reply.text(), "Hello from Switchyard!\n");
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
        for (handle, (_, path, outcome)) in hostile_requests.into_iter().zip(expected) {
            assert_eq!(handle.await.expect("no host panic"), outcome, "{path}");
        }
        assert!(matches!(
            start_loop_request.await.unwrap(),
            Err(DispatchError::Timeout)
        ));
        let served = served.load(Ordering::Relaxed);
        assert!(served >= 20, "only {served} canary requests in {elapsed:?}");
        eprintln!("canary: {served} requests served in {elapsed:?} beside the hostile guests");
    });
}

/// Clients that go away at any point — during instantiation, guest compute,
/// a host call (a clock wait, kv writes, a database write) or mid-body —
/// thousands of times, 16 at once. Afterwards every pool slot and file
/// descriptor is back, the database's writer is free, no stored row is
/// half-written, and nothing that finished was an internal error.
#[tokio::test]
async fn thousands_of_cancelled_requests_leak_nothing() {
    use switchyard_runtime::db::migrate::Removals;
    use switchyard_runtime::db::schema::{Schema, Table};

    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let app = hostile(&runtime, "cancelled", generous()).await;
    #[derive(serde::Deserialize)]
    struct Manifest {
        tables: Vec<Table>,
    }
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/todo-api/switchyard.toml"
    );
    let manifest: Manifest = toml::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let schema = Arc::new(Schema::new(manifest.tables).unwrap());
    let project = switchyard_runtime::ProjectId::new("todos").unwrap();
    runtime
        .db()
        .migrate(&project, &schema, Removals::Refuse)
        .await
        .unwrap();
    let component = runtime
        .compile(&artifacts::read(artifacts::TODO_API))
        .await
        .unwrap();
    let todos = runtime
        .app(&switchyard_runtime::AppSpec {
            schema,
            ..spec("todos", component)
        })
        .await
        .unwrap();
    let insert = || {
        request(
            "POST",
            "/api/todos",
            Bytes::from_static(br#"{"title":"storm"}"#),
        )
    };

    // Every slot of the pool (64 in these tests) busy at once, all served.
    let fill_the_pool = || async {
        let sleepers = (0..64).map(|_| get(&app, "/sleep?ms=200"));
        futures::future::join_all(sleepers)
            .await
            .into_iter()
            .all(|reply| reply.is_ok_and(|r| r.status == 200))
    };
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(fill_the_pool().await);
    send(&todos, insert()).await.unwrap();
    let fds_before = open_fds();

    let routes = [
        "/spin",
        "/sleep?ms=50",
        "/kv-spam",
        "/huge-body?mb=2",
        "/ok",
        "/body-hoard?bodies=8",
    ];
    let mut finished = 0;
    const BATCHES: u64 = 125;
    for batch in 0..BATCHES {
        let requests = (0..16u64).map(|i| {
            let n = batch * 16 + i;
            // Cut after 0 µs to 4 ms: before, during and after instantiation.
            let cut = Duration::from_micros((n * 257) % 4000);
            let (app, todos) = (app.clone(), todos.clone());
            let route = routes[(n % 7) as usize % routes.len()];
            async move {
                if n % 7 == 6 {
                    tokio::time::timeout(cut, send(&todos, insert())).await
                } else {
                    tokio::time::timeout(cut, get(&app, route)).await
                }
            }
        });
        for result in futures::future::join_all(requests)
            .await
            .into_iter()
            .flatten()
        {
            finished += 1;
            if let Err(e) = &result {
                assert_ne!(e.code(), "INTERNAL", "{e:?}");
            }
        }
    }
    eprintln!(
        "{} requests cut short at varied points; {finished} finished first",
        BATCHES * 16
    );

    // A guest still streaming its body when its client left runs on a
    // task of its own, and one that computed for long enough on the
    // background lane; both are aborted then, and their slots come back
    // when that task next runs — for the lane, at its low priority, when
    // this busy machine has CPU to spare.
    let mut refilled = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fill_the_pool().await {
            refilled = true;
            break;
        }
    }
    assert!(refilled, "pool slots leaked");
    let (inserted, took) = timed(send(&todos, insert())).await;
    assert_eq!(inserted.unwrap().status, 201);
    assert!(
        took < Duration::from_secs(2),
        "the writer was held: {took:?}"
    );
    let listed = send(&todos, request("GET", "/api/todos", Bytes::new()))
        .await
        .unwrap()
        .json();
    let rows = listed.as_array().expect("a list of todos");
    assert!(rows.len() >= 2, "{listed}");
    for row in rows {
        assert_eq!(row["title"], "storm", "a half-written row: {row}");
    }
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before + 2,
        "file descriptors leaked: {fds_before} before, {fds_after} after"
    );
}

/// Tenant A holds as much of the node as it may — its whole concurrency,
/// each request at its memory cap — and asks for more: A gets `CAPACITY`,
/// tenant B still gets a slot and is served, and nothing is killed.
#[tokio::test]
async fn a_tenant_at_its_memory_cap_times_its_concurrency_leaves_room_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.pool.total_component_instances = 6;
    let runtime = runtime_with(config, dir.path());
    let greedy = LimitsOverride {
        concurrency: Some(4),
        memory_bytes: Some(64 << 20),
        wall_clock_ms: Some(5000),
        ..generous()
    };
    let a = hostile(&runtime, "greedy", greedy).await;
    let b = deploy(
        &runtime,
        &artifacts::read(artifacts::HELLO),
        "neighbour",
        LimitsOverride::default(),
    )
    .await;
    // Each of A's requests grows its memory by 56 MiB (to about 60 MiB of
    // its 64 MiB), touches every page, and holds it.
    let holders: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { get(&a, "/fill?mb=56&sleep=1500").await.map(|r| r.text()) })
        })
        .collect();
    wait_for_lines(&runtime, &a, "filled, sleeping", 4).await;
    // Past its concurrency: refused before it takes a slot or memory.
    let refused = error(get(&a, "/fill?mb=56").await);
    assert!(matches!(refused, DispatchError::Capacity), "{refused:?}");
    assert_eq!(refused.status().as_u16(), 503);
    // B instantiates in one of the slots A may not take.
    for _ in 0..5 {
        let reply = get(&b, "/").await.expect("the neighbour is served");
        assert_eq!(reply.text(), "Hello from Switchyard!\n");
    }
    for holder in holders {
        assert_eq!(
            holder.await.unwrap().unwrap(),
            format!("filled {} bytes", 56 << 20)
        );
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(done, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// On a single-threaded caller, a guest spinning for 600 ms: with the
/// background lane it leaves the caller's thread within a tick or two, so
/// that thread spends almost no CPU on it; with the lane off (the control,
/// so the test can fail) the caller's thread runs it all.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_leaves_the_callers_thread_for_the_background_lane() {
    for (background_after_ms, moves) in [(2, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime_with(
            switchyard_runtime::RuntimeConfig {
                background_after_ms,
                ..config(dir.path())
            },
            dir.path(),
        );
        let app = hostile(&runtime, "spin", with_deadline(600)).await;
        let before = thread_cpu_time();
        let (result, elapsed) = timed(get(&app, "/spin")).await;
        let spent = thread_cpu_time() - before;
        assert_timed_out(result, elapsed, 600);
        eprintln!(
            "background_after_ms = {background_after_ms}: the caller's thread spent {spent:?}"
        );
        if moves {
            assert!(
                spent < Duration::from_millis(150),
                "{spent:?} on the caller's thread"
            );
        } else {
            assert!(
                spent > Duration::from_millis(300),
                "{spent:?} on the caller's thread"
            );
        }
    }
}
