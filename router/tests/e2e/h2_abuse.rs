//! HTTP/2 abuse over raw frames (h2c by prior knowledge): rapid reset,
//! CONTINUATION flood, empty DATA flood, more streams than allowed. Each
//! attack ends at a bound, memory stays bounded, and a canary on another
//! connection is served during and after it.

use crate::common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard_test_artifacts as artifacts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal (no Huffman), short enough for a one-byte length.
fn hpack_str(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 127);
    out.push(u8::try_from(s.len()).unwrap());
    out.extend_from_slice(s.as_bytes());
}

/// A request header block: `:method`, `:scheme http`, `:path`, `:authority`.
fn request_block(method: &str, host: &str, path: &str) -> Vec<u8> {
    let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x86];
    // Literal without indexing, indexed names 4 (`:path`) and 1 (`:authority`).
    block.push(0x04);
    hpack_str(&mut block, path);
    block.push(0x01);
    hpack_str(&mut block, host);
    block
}

/// What the server sent on one connection.
#[derive(Debug, Default)]
struct Seen {
    goaway: Option<u32>,
    resets: Vec<(u32, u32)>,
    responses: Vec<u32>,
    max_concurrent_streams: Option<u32>,
    closed: bool,
}

/// Opens an h2c connection: preface and empty SETTINGS, then the server's
/// SETTINGS are read and acknowledged.
async fn open(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf, Seen) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(PREFACE).await.unwrap();
    write.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut seen = Seen::default();
    loop {
        let (kind, flags, _, payload) = read_frame(&mut read).await.expect("server settings");
        if kind == SETTINGS && flags & ACK == 0 {
            for setting in payload.chunks(6) {
                if setting[..2] == [0, 3] {
                    seen.max_concurrent_streams =
                        Some(u32::from_be_bytes(setting[2..6].try_into().unwrap()));
                }
            }
            break;
        }
    }
    write
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    (read, write, seen)
}

async fn read_frame(read: &mut OwnedReadHalf) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    read.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    read.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads frames until the server closes the connection, sends GOAWAY, or
/// `stop` says enough has been seen, at most `within`.
async fn watch(
    read: &mut OwnedReadHalf,
    seen: &mut Seen,
    within: Duration,
    stop: impl Fn(&Seen) -> bool,
) {
    let _ = tokio::time::timeout(within, async {
        while !stop(seen) {
            match read_frame(read).await {
                None => {
                    seen.closed = true;
                    return;
                }
                Some((GOAWAY, _, _, payload)) => {
                    seen.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                    return;
                }
                Some((RST_STREAM, _, stream, payload)) => {
                    seen.resets
                        .push((stream, u32::from_be_bytes(payload[..4].try_into().unwrap())));
                }
                Some((HEADERS, _, stream, _)) => seen.responses.push(stream),
                Some(_) => {}
            }
        }
    })
    .await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Serves the canary while `attack` runs: every canary request must
/// succeed, none slower than `bound`.
async fn with_canary<F: Future>(server: &TestServer, attack: F) -> F::Output {
    let canary = async {
        let mut served = 0;
        loop {
            let started = Instant::now();
            let reply = server.get("canary.localhost", "/").await;
            assert_eq!(reply.status, 200, "the canary failed: {}", reply.text());
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the canary took {:?}",
                started.elapsed()
            );
            served += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if served > 10_000 {
                return;
            }
        }
    };
    tokio::select! {
        output = attack => output,
        () = canary => unreachable!("the canary never stops"),
    }
}

async fn abuse_server(max_streams: u32) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.http.h2_max_concurrent_streams = max_streams;
    let mut server = TestServer::start_with(config).await;
    // The data directory lives as long as the server.
    server.keep(dir);
    server.deploy_component("canary", artifacts::HELLO).await;
    server.deploy_component("target", artifacts::HOSTILE).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_answered_with_goaway() {
    let server = abuse_server(200).await;
    let fds = open_fds();
    let (mut read, mut write, mut seen) = open(server.public).await;
    let block = request_block("GET", "target.localhost", "/sleep?ms=200");
    let outcome = with_canary(&server, async {
        let mut attack = Vec::new();
        for i in 0..5_000u32 {
            let stream = 2 * i + 1;
            attack.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
            attack.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
        }
        // The server may stop reading half way: that is the point.
        let written = write.write_all(&attack).await.is_ok();
        watch(&mut read, &mut seen, Duration::from_secs(10), |_| false).await;
        written
    })
    .await;
    eprintln!("rapid reset: all written: {outcome}; {seen:?}");
    // h2 counts streams reset before the server took them, and gives up on
    // the connection past `max_pending_accept_reset_streams` (20).
    assert_eq!(
        seen.goaway,
        Some(0xb),
        "ENHANCE_YOUR_CALM expected: {seen:?}"
    );
    drop((read, write));
    assert_eq!(server.get("canary.localhost", "/").await.status, 200);
    until("connections to close", || open_fds() <= fds + 2).await;
    server.assert_back_to_baseline().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_at_the_header_limit() {
    let server = abuse_server(200).await;
    let rss = rss_kib();
    let (mut read, mut write, mut seen) = open(server.public).await;
    let block = request_block("GET", "target.localhost", "/ok");
    // One 16 KiB CONTINUATION after another, each full of small literal
    // headers, never ending the header block: 64 MiB if nothing stops it.
    let mut fragment = Vec::new();
    while fragment.len() < 16_000 {
        fragment.push(0x00);
        hpack_str(&mut fragment, "x-flood");
        hpack_str(&mut fragment, &"v".repeat(100));
    }
    let sent = with_canary(&server, async {
        write
            .write_all(&frame(HEADERS, 0, 1, &block))
            .await
            .unwrap();
        let continuation = frame(CONTINUATION, 0, 1, &fragment);
        let mut sent = 0usize;
        let flood = async {
            for _ in 0..4096 {
                if write.write_all(&continuation).await.is_err() {
                    break;
                }
                sent += continuation.len();
            }
        };
        tokio::join!(
            flood,
            watch(&mut read, &mut seen, Duration::from_secs(20), |s| !s
                .resets
                .is_empty())
        );
        sent
    })
    .await;
    let grown = rss_kib().saturating_sub(rss);
    eprintln!("continuation flood: {sent} bytes written, RSS +{grown} KiB; {seen:?}");
    assert!(
        seen.goaway.is_some() || seen.closed || !seen.resets.is_empty(),
        "the flood was not stopped: {seen:?}"
    );
    assert!(seen.responses.is_empty(), "a request got through: {seen:?}");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(server.get("canary.localhost", "/").await.status, 200);
    server.assert_back_to_baseline().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_flood_costs_the_sender_not_the_server() {
    let server = abuse_server(200).await;
    let rss = rss_kib();
    let (mut read, mut write, mut seen) = open(server.public).await;
    let block = request_block("POST", "target.localhost", "/body-length");
    let started = Instant::now();
    let frames = with_canary(&server, async {
        write
            .write_all(&frame(HEADERS, END_HEADERS, 1, &block))
            .await
            .unwrap();
        let empty = frame(DATA, 0, 1, &[]).repeat(10_000);
        let mut frames = 0;
        for _ in 0..50 {
            if write.write_all(&empty).await.is_err() {
                break;
            }
            frames += 10_000;
        }
        let _ = write.write_all(&frame(DATA, END_STREAM, 1, b"end")).await;
        watch(&mut read, &mut seen, Duration::from_secs(20), |s| {
            !s.responses.is_empty() || !s.resets.is_empty()
        })
        .await;
        frames
    })
    .await;
    let grown = rss_kib().saturating_sub(rss);
    eprintln!(
        "empty DATA flood: {frames} frames in {:?}, RSS +{grown} KiB; {seen:?}",
        started.elapsed()
    );
    // Either the request completes (the empty frames cost only the sender's
    // bandwidth) or the server ends the connection; never unbounded memory.
    assert!(
        seen.responses == [1] || seen.goaway.is_some() || seen.closed,
        "{seen:?}"
    );
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(server.get("canary.localhost", "/").await.status, 200);
    server.assert_back_to_baseline().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused() {
    let server = abuse_server(4).await;
    let (mut read, mut write, mut seen) = open(server.public).await;
    assert_eq!(seen.max_concurrent_streams, Some(4));
    let block = request_block("GET", "target.localhost", "/sleep?ms=500");
    let mut burst = Vec::new();
    for i in 0..12u32 {
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
    }
    write.write_all(&burst).await.unwrap();
    watch(&mut read, &mut seen, Duration::from_secs(10), |s| {
        s.responses.len() + s.resets.len() >= 12
    })
    .await;
    eprintln!("stream cap: {seen:?}");
    let refused = seen
        .resets
        .iter()
        .filter(|(_, code)| *code == REFUSED_STREAM)
        .count();
    assert_eq!(seen.responses.len(), 4, "{seen:?}");
    assert_eq!(refused, 8, "{seen:?}");
    assert!(seen.goaway.is_none());
    assert_eq!(server.get("canary.localhost", "/").await.status, 200);
    drop((read, write));
    server.assert_back_to_baseline().await;
}
