//! Listeners and connections: accept with a connection cap, optional TLS
//! (SNI picks the certificate, ALPN offers h2), then hyper serves HTTP/1.1 or
//! HTTP/2 (h2c by prior knowledge on plain TCP) with header-read and idle
//! timeouts and header limits. Shutdown stops accepting, then lets
//! in-flight requests finish within a grace period.

use crate::config::HttpConfig;
use crate::dispatch::ConnInfo;
use crate::error::Body;
use crate::idle::{Activity, IdleTimeout, InFlight};
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
    /// The node's count of open connections, on every listener.
    pub open: Arc<OpenConnections>,
}

/// Connections being served now (the cap's permits do not say: each accept
/// loop holds one while it waits for the next connection).
#[derive(Default)]
pub struct OpenConnections(AtomicUsize);

impl OpenConnections {
    /// How many.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(self: &Arc<Self>) -> OpenConnection {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// One open connection, counted until dropped.
struct OpenConnection(Arc<OpenConnections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
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
        open,
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
        let counted = open.enter();
        tokio::spawn(async move {
            let (_permit, _counted) = (permit, counted);
            let idle = Duration::from_millis(http.idle_timeout_ms);
            let activity = Activity::new();
            match tls {
                None => {
                    let conn = ConnInfo {
                        peer,
                        tls: false,
                        sni: None,
                    };
                    serve(
                        &builder,
                        IdleTimeout::new(stream, idle, activity.clone()),
                        conn,
                        handler,
                        watcher,
                        activity,
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
                        IdleTimeout::new(stream, idle, activity.clone()),
                        conn,
                        handler,
                        watcher,
                        activity,
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
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |request| {
        let (handler, conn, activity) = (handler.clone(), conn.clone(), activity.clone());
        async move {
            let handling = activity.handler();
            let response = handler(request, conn).await;
            let sending = activity.streaming();
            drop(handling);
            Ok::<_, Infallible>(response.map(|body| Sending {
                body,
                in_flight: Some(sending),
            }))
        }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A response body, marked as being sent (for the idle timeout) until its
/// last frame.
struct Sending {
    body: Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = crate::error::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.in_flight = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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
