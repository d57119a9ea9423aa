//! Listeners and connections: accept with a connection cap, optional TLS
//! (SNI picks the certificate, ALPN offers h2), then hyper serves HTTP/1.1 or
//! HTTP/2 (h2c by prior knowledge on plain TCP) with header-read and idle
//! timeouts and header limits. Shutdown stops accepting, then lets
//! in-flight requests finish within a grace period.

use crate::config::HttpConfig;
use crate::dispatch::ConnInfo;
use crate::error::Body;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// Handles one request of a connection.
pub type Handler = Arc<
    dyn Fn(http::Request<Incoming>, ConnInfo) -> BoxFuture<'static, http::Response<Body>>
        + Send
        + Sync,
>;

/// How one listener serves its connections.
pub struct ListenerSpec {
    /// The bound socket.
    pub listener: TcpListener,
    /// TLS, if this is an HTTPS listener.
    pub tls: Option<TlsAcceptor>,
    /// The request handler.
    pub handler: Handler,
    /// Limits and timeouts.
    pub http: Arc<HttpConfig>,
    /// Shared by listeners that share a connection cap.
    pub connections: Arc<Semaphore>,
}

/// Accepts connections until `stop` turns true; each connection is served
/// under `graceful`, so shutdown can wait for it.
pub async fn accept_loop(
    spec: ListenerSpec,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let ListenerSpec {
        listener,
        tls,
        handler,
        http,
        connections,
    } = spec;
    let builder = Arc::new(http_builder(&http));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or similar: back off rather
                    // than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let (tls, handler, http, builder) =
            (tls.clone(), handler.clone(), http.clone(), builder.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let idle = Duration::from_millis(http.idle_timeout_ms);
            match tls {
                None => {
                    let conn = ConnInfo {
                        peer,
                        tls: false,
                        sni: None,
                    };
                    serve(
                        &builder,
                        IdleTimeout::new(stream, idle),
                        conn,
                        handler,
                        watcher,
                    )
                    .await;
                }
                Some(acceptor) => {
                    let handshake = Duration::from_millis(http.header_read_timeout_ms);
                    let stream =
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let sni = stream.get_ref().1.server_name().map(str::to_owned);
                    let conn = ConnInfo {
                        peer,
                        tls: true,
                        sni,
                    };
                    serve(
                        &builder,
                        IdleTimeout::new(stream, idle),
                        conn,
                        handler,
                        watcher,
                    )
                    .await;
                }
            }
        });
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn http_builder(http: &HttpConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(http.header_read_timeout_ms))
        .max_headers(http.max_headers)
        .max_buf_size(http.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(20))
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    conn: ConnInfo,
    handler: Handler,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |request| {
        let (handler, conn) = (handler.clone(), conn.clone());
        async move { Ok::<_, Infallible>(handler(request, conn).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Closes a connection on which no byte has moved, either way, for `idle`.
struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn activity(&mut self) {
        let deadline = Instant::now() + self.idle;
        self.timer.as_mut().reset(deadline);
    }

    /// Counts bytes written as activity; a write stuck for the idle time
    /// fails.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.activity();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.activity();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Binds a listener.
pub async fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connections_are_closed_and_active_ones_are_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_millis(100));
        let mut client = client;
        // Activity keeps it open past the idle time.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
        }
        // Silence closes it.
        let mut byte = [0u8; 1];
        let err = server.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
