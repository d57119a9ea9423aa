//! Test fixture: a guest that misbehaves in every way the sandbox must
//! contain. Each route is one behaviour; the runtime's tests state the
//! outcome each must produce.
//!
//! | route | behaviour |
//! |---|---|
//! | `/ok` | answers `ok` (a control) |
//! | `/spin` | loops forever in the handler |
//! | `/recurse` | recurses until the wasm stack overflows |
//! | `/alloc` | allocates 1 MiB blocks until memory runs out |
//! | `/huge-body?mb=N[&declared]` | streams N MiB (with `declared`, announces it in `content-length` first) |
//! | `/drip?chunks=N&ms=M` | prints `dripping`, then streams N lines (`chunk <i>`), one every M ms |
//! | `/partial-then-trap` | sends headers and some body, then panics |
//! | `/trap` | panics before responding |
//! | `/no-response` | returns without setting a response |
//! | `/bad-response` | sets the response slot to an error |
//! | `/header-bomb` | adds thousands of headers, ignoring errors, and responds |
//! | `/big-header` | adds one 200 KB header value and reports what happened |
//! | `/log-flood?kb=N` | prints N KiB to stdout, then answers |
//! | `/kv-spam` | calls kv `set` 2000 times; reports successes and the first error |
//! | `/kv?op=get\|set\|list&key=K&value=V` | raw kv access with any key |
//! | `/escape` | tries a file, a socket, a DNS lookup and an outgoing request |
//! | `/env` | returns its environment as JSON |
//! | `/sleep?ms=N` | prints `sleeping`, then blocks in the host (a monotonic-clock wait) for N ms |
//! | `/body-length` | prints `reading the body`, reads the request body and returns its length |
//! | `/body-hoard?bodies=N` | creates N responses it never sends and fills their bodies as far as the host buffers; returns the bytes the host accepted |
//! | `/random?bytes=N` | asks the host for N random bytes at once |
//! | `/exit` | calls `exit(3)` |
//! | `/fill?mb=N[&sleep=MS]` | grows its memory by N MiB and fills the new pages with a pattern no constant of this guest holds (then prints `filled, sleeping` and blocks in the host for MS ms) |
//! | `/fetch?url=U[&n=N][&host=H][&timeout=MS]` | sends N (default 1) outgoing GETs to U with the SDK, first trying to set `Host: H`; returns each outcome as JSON |
//! | `/scan?mb=N[&fill]` | grows its memory by N MiB (with `fill`, fills it first) and counts the 64-byte blocks of its whole memory that hold the pattern |

use std::hint::black_box;
use switchyard_sdk::wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use switchyard_sdk::{Request, Response, kv};

fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let path_and_query = incoming.path_with_query().unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query.as_str(), ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match path {
        // Routes that take over the response slot themselves.
        "/huge-body" => huge_body(out, param("mb").unwrap_or(10), query.contains("declared")),
        "/drip" => drip(
            out,
            param("chunks").unwrap_or(10),
            param("ms").unwrap_or(100),
        ),
        "/partial-then-trap" => partial_then_trap(out),
        "/no-response" => {}
        "/bad-response" => ResponseOutparam::set(out, Err(ErrorCode::InternalError(None))),
        "/header-bomb" => header_bomb(out),
        // Everything else reads the request and answers with the SDK.
        _ => {
            let response = match Request::read(incoming) {
                Ok(req) => route(&req, path),
                Err(e) => Response::text(format!("{e}\n")).with_status(400),
            };
            response.send(out);
        }
    }
}

fn route(req: &Request, path: &str) -> Response {
    match path {
        "/ok" => Response::text("ok"),
        "/spin" => loop {
            black_box(());
        },
        "/recurse" => Response::text(format!("{}", recurse(black_box(u64::MAX)))),
        "/alloc" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "/trap" => panic!("the hostile guest panics on purpose"),
        "/fill" | "/scan" => {
            let mb = req
                .query_param("mb")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8);
            let Some(grown) = grow(mb) else {
                return Response::text("memory.grow failed").with_status(500);
            };
            let len = grown.len();
            if path == "/fill" || req.query_param("fill").is_some() {
                fill(grown);
            }
            if path == "/fill" {
                if let Some(ms) = req.query_param("sleep").and_then(|v| v.parse().ok()) {
                    println!("filled, sleeping");
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                Response::text(format!("filled {len} bytes"))
            } else {
                Response::json(&scan())
            }
        }
        "/big-header" => big_header(),
        "/log-flood" => {
            let kb = req
                .query_param("kb")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024);
            let line = "x".repeat(1023);
            for _ in 0..kb {
                println!("{line}");
            }
            Response::text("flooded")
        }
        "/kv-spam" => kv_spam(),
        "/kv" => raw_kv(req),
        "/escape" => escape(),
        "/fetch" => fetch(req),
        "/env" => Response::json(&std::env::vars().collect::<std::collections::BTreeMap<_, _>>()),
        "/sleep" => {
            let ms = req
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60_000);
            println!("sleeping");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text("slept")
        }
        "/body-length" => {
            println!("reading the body");
            Response::text(req.body().len().to_string())
        }
        "/body-hoard" => {
            let bodies = req
                .query_param("bodies")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            Response::text(body_hoard(bodies).to_string())
        }
        "/random" => {
            let bytes = req
                .query_param("bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(16);
            let random = switchyard_sdk::wasi::random::random::get_random_bytes(bytes);
            Response::text(random.len().to_string())
        }
        "/exit" => std::process::exit(3),
        _ => Response::text("no such behaviour\n").with_status(404),
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1))) + 1
    }
}

fn respond(out: ResponseOutparam, headers: Fields) -> OutgoingBody {
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(response));
    body
}

/// Fills the bodies of `bodies` responses nobody will ever read, each as far
/// as the host accepts, and returns the total the host buffered.
fn body_hoard(bodies: usize) -> u64 {
    let chunk = vec![0u8; 1 << 20];
    let mut held = Vec::with_capacity(bodies);
    let mut accepted = 0u64;
    for _ in 0..bodies {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body taken once");
        let stream = body.write().expect("stream taken once");
        while let Ok(permit) = stream.check_write() {
            let n = (permit as usize).min(chunk.len());
            if n == 0 || stream.write(&chunk[..n]).is_err() {
                break;
            }
            accepted += n as u64;
        }
        // Children before parents: the stream, then its body, then the response.
        held.push((stream, body, response));
    }
    accepted
}

fn huge_body(out: ResponseOutparam, mb: u64, declared: bool) {
    let headers = Fields::new();
    if declared {
        let length = (mb << 20).to_string();
        headers
            .append("content-length", length.as_bytes())
            .expect("valid header");
    }
    let body = respond(out, headers);
    let stream = body.write().expect("stream taken once");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..mb * 16 {
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            let Ok(permit) = stream.check_write() else {
                return;
            };
            if permit == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = (permit as usize).min(rest.len());
            if stream.write(&rest[..n]).is_err() {
                return;
            }
            rest = &rest[n..];
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// A response that takes its time: `chunks` lines, `ms` apart.
fn drip(out: ResponseOutparam, chunks: u64, ms: u64) {
    let body = respond(out, Fields::new());
    let stream = body.write().expect("stream taken once");
    println!("dripping");
    for i in 0..chunks {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if stream
            .blocking_write_and_flush(format!("chunk {i}\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

fn partial_then_trap(out: ResponseOutparam) {
    let body = respond(out, Fields::new());
    let stream = body.write().expect("stream taken once");
    stream
        .blocking_write_and_flush(b"this response will never be complete")
        .expect("client connected");
    panic!("the hostile guest panics after sending headers");
}

fn header_bomb(out: ResponseOutparam) {
    let headers = Fields::new();
    for i in 0..10_000 {
        let _ = headers.append(&format!("x-bomb-{i}"), b"1");
    }
    let body = respond(out, headers);
    let _ = OutgoingBody::finish(body, None);
}

fn big_header() -> Response {
    let headers = Fields::new();
    let outcome = match headers.append("x-big", &vec![b'a'; 200_000]) {
        Ok(()) => "accepted".to_string(),
        Err(e) => format!("refused: {e:?}"),
    };
    Response::text(outcome)
}

fn kv_spam() -> Response {
    let mut ok = 0u32;
    let mut first_error = None;
    for i in 0..2000 {
        match kv::set(&format!("spam:{i}"), "v") {
            Ok(()) => ok += 1,
            Err(e) => {
                first_error.get_or_insert(format!("{e:?}"));
            }
        }
    }
    Response::json(&serde_json::json!({ "ok": ok, "firstError": first_error }))
}

fn raw_kv(req: &Request) -> Response {
    let key = req.query_param("key").unwrap_or_default();
    let result = match req.query_param("op").as_deref() {
        Some("get") => kv::get(&key)
            .map(|v| serde_json::json!(v.map(|v| String::from_utf8_lossy(&v).into_owned()))),
        Some("set") => kv::set(&key, req.query_param("value").unwrap_or_default())
            .map(|()| serde_json::json!("set")),
        Some("list") => kv::list_page(&key, None, 1000).map(|page| serde_json::json!(page.keys)),
        _ => return Response::text("op must be get, set or list\n").with_status(400),
    };
    match result {
        Ok(value) => Response::json(&value),
        Err(e) => Response::json(&serde_json::json!({ "error": format!("{e:?}") })),
    }
}

fn escape() -> Response {
    fn outcome<T, E: std::fmt::Debug>(result: Result<T, E>) -> String {
        match result {
            Ok(_) => "allowed".into(),
            Err(e) => format!("error: {e:?}"),
        }
    }
    let file = outcome(std::fs::read_to_string("/etc/passwd"));
    let dir = outcome(std::fs::read_dir("/"));
    let write = outcome(std::fs::write("/tmp/escaped", b"x"));
    let socket = outcome(std::net::TcpStream::connect("127.0.0.1:22"));
    let udp = outcome(std::net::UdpSocket::bind("0.0.0.0:0"));
    let dns = outcome(std::net::ToSocketAddrs::to_socket_addrs("example.com:80"));
    Response::json(&serde_json::json!({
        "file": file,
        "dir": dir,
        "write": write,
        "socket": socket,
        "udp": udp,
        "dns": dns,
        "http": outgoing_http(),
    }))
}

fn fetch(req: &Request) -> Response {
    use switchyard_sdk::outbound;

    let url = req.query_param("url").unwrap_or_default();
    let n: u32 = req
        .query_param("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut results = Vec::new();
    for _ in 0..n {
        let mut request = outbound::Request::get(url.as_str());
        if let Some(ms) = req.query_param("timeout").and_then(|ms| ms.parse().ok()) {
            request = request.timeout_ms(ms);
        }
        let mut host_header = None;
        if let Some(host) = req.query_param("host") {
            // The host refuses a guest-set Host; the attempt is reported
            // and the request sent without it.
            let with_host = request.clone().header("host", host.as_str());
            host_header = Some(match with_host.send() {
                Err(outbound::Error::InvalidHeader(_)) => "refused".to_string(),
                other => format!("accepted: {other:?}"),
            });
        }
        results.push(match request.send() {
            Ok(response) => serde_json::json!({
                "status": response.status(),
                "location": response.header("location"),
                "body": response.text(),
                "host_header": host_header,
            }),
            Err(e) => serde_json::json!({ "error": format!("{e:?}"), "host_header": host_header }),
        });
    }
    Response::json(&results)
}

fn outgoing_http() -> String {
    use switchyard_sdk::wasi::http::outgoing_handler;
    use switchyard_sdk::wasi::http::types::{OutgoingRequest, Scheme};

    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Https));
    let _ = request.set_authority(Some("example.com"));
    let _ = request.set_path_with_query(Some("/"));
    match outgoing_handler::handle(request, None) {
        Err(e) => format!("error: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(_))) => "allowed".into(),
                Some(Ok(Err(e))) => format!("error: {e:?}"),
                other => format!("error: {other:?}"),
            }
        }
    }
}

switchyard_sdk::export!(raw handle);

/// Byte `j` of a 64-byte block of the pattern `/fill` writes. Computed at
/// each use, so the pattern is never in this guest's data, stack or heap
/// unless `/fill` put it there.
#[inline(never)]
fn pattern_byte(j: usize) -> u8 {
    black_box(0x3du8).wrapping_add((j as u8).wrapping_mul(151)) ^ 0x5c
}

/// Grows memory 0 by `mb` MiB, bypassing the allocator: the address range of
/// the new pages.
fn grow(mb: u64) -> Option<std::ops::Range<usize>> {
    let pages = usize::try_from(mb).ok()?.checked_mul(16)?;
    let old = memory_grow(pages);
    (old != usize::MAX).then(|| old * 65536..(old + pages) * 65536)
}

fn fill(range: std::ops::Range<usize>) {
    for block in range.step_by(64) {
        for j in 0..64 {
            // SAFETY: the range was just grown and nothing else owns it.
            unsafe { ((block + j) as *mut u8).write_volatile(pattern_byte(j)) }
        }
    }
}

/// `{"bytes": memory size, "found": blocks holding the pattern}`, over all
/// of memory 0 but its first block (address 0 is not a valid pointer).
fn scan() -> serde_json::Value {
    let size = memory_pages() * 65536;
    let found = (64..size)
        .step_by(64)
        .filter(|block| {
            // SAFETY: every address below the memory size is readable.
            (0..64)
                .all(|j| unsafe { ((block + j) as *const u8).read_volatile() } == pattern_byte(j))
        })
        .count();
    serde_json::json!({ "bytes": size, "found": found })
}

/// Memory 0's size in pages, and growing it (`usize::MAX` on failure). The
/// guest runs on wasm32 only; the other definitions let the workspace build.
#[cfg(target_arch = "wasm32")]
fn memory_pages() -> usize {
    core::arch::wasm32::memory_size::<0>()
}

#[cfg(target_arch = "wasm32")]
fn memory_grow(pages: usize) -> usize {
    core::arch::wasm32::memory_grow::<0>(pages)
}

#[cfg(not(target_arch = "wasm32"))]
fn memory_pages() -> usize {
    0
}

#[cfg(not(target_arch = "wasm32"))]
fn memory_grow(_pages: usize) -> usize {
    usize::MAX
}
