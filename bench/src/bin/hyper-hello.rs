//! The ceiling of the comparison: hyper answering every request with a
//! fixed "hello world", on one tokio runtime (its workers follow the CPUs
//! the process may run on, so `taskset -c 0` gives it one), HTTP/1.1
//! keep-alive. Nothing Switchyard does per request is here.
//!
//! Usage: `hyper-hello <address>`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

fn main() -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let hello = service_fn(|_request| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                    b"Hello from hyper!\n",
                ))))
            });
            // A client closing its connection is not an error worth noting.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hello)
                .await;
        });
    }
}
