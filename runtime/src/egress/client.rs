//! Sends one allowed request: resolve, check every address, connect, TLS,
//! HTTP/1.1. One connection per request, closed with its response.

use super::Egress;
use super::allowlist::{Host, Scheme};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Most resolved addresses tried before giving up.
const MAX_ADDRESSES_TRIED: usize = 4;

/// Largest response head accepted (hyper's smallest read buffer is 8 KiB).
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Where an allowed request goes.
pub(super) struct Target {
    pub(super) scheme: Scheme,
    pub(super) host: Host,
    pub(super) port: u16,
}

impl Target {
    /// The `Host` header: the authority, without the scheme's default port.
    pub(super) fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request failed before a response, for the log and the guest.
pub(super) struct Failure {
    pub(super) error: Error,
    /// Safe to show the project: what happened, without host internals.
    pub(super) reason: String,
    /// The metric's `result` label.
    pub(super) result: &'static str,
}

fn failed(error: Error, reason: impl Into<String>) -> Failure {
    Failure {
        error,
        reason: reason.into(),
        result: "failed",
    }
}

type Stream = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A response head and the future that drives the rest of the connection.
pub(super) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Sends `request` to `target`. The request's URI and `Host` are rewritten
/// here: whatever the guest put in them, the wire carries the target's
/// authority and an origin-form path.
pub(super) async fn send(
    egress: Arc<Egress>,
    target: Target,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Failure> {
    let connect_timeout = shorter(
        egress.connect_timeout,
        options.and_then(|o| o.connect_timeout),
    );
    let first_byte_timeout = shorter(
        egress.response_timeout,
        options.and_then(|o| o.first_byte_timeout),
    );
    let between_bytes_timeout = shorter(
        egress.response_timeout,
        options.and_then(|o| o.between_bytes_timeout),
    );

    let stream = tokio::time::timeout(connect_timeout, connect(&egress, &target))
        .await
        .map_err(|_| failed(Error::ConnectionTimeout, "connecting timed out"))??;

    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<http::Uri>()
        .map_err(|_| failed(Error::HttpRequestUriInvalid, "the path is invalid"))?;
    *request.uri_mut() = path;
    let headers = request.headers_mut();
    headers.remove(http::header::HOST);
    let host = http::HeaderValue::try_from(target.authority())
        .map_err(|_| failed(Error::HttpRequestUriInvalid, "the host is invalid"))?;
    headers.insert(http::header::HOST, host);

    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(Error::from(e), "the HTTP handshake failed"))?;

    // Drive the connection while waiting for the head; what is left of it
    // (the body) is driven by the returned future, which wasmtime-wasi-http
    // runs in a task owned by the response.
    let mut conn = Some(conn);
    let mut response = std::pin::pin!(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request)
    ));
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(driver) = conn.as_mut()
            && let Poll::Ready(result) = Pin::new(driver).poll(cx)
        {
            conn = None;
            if let Err(e) = result {
                return Poll::Ready(Ok(Err(e)));
            }
            return response.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
    .map_err(|_| failed(Error::ConnectionReadTimeout, "no response in time"))?
    .map_err(|e| failed(Error::from(e), "the connection failed"))?;

    let response = response.map(|body| {
        BetweenBytes {
            body,
            timeout: between_bytes_timeout,
            sleep: None,
        }
        .boxed_unsync()
    });
    let io = async move {
        match conn {
            Some(conn) => conn.await.map_err(Error::from),
            None => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

/// The operator's timeout, or the guest's if it asked for less.
fn shorter(operator: Duration, guest: Option<Duration>) -> Duration {
    guest
        .map_or(operator, |g| g.min(operator))
        .max(Duration::from_millis(1))
}

/// Resolves the target, keeps the addresses the policy allows, and connects
/// to the first that answers.
async fn connect(egress: &Egress, target: &Target) -> Result<Stream, Failure> {
    let addresses: Vec<IpAddr> = match &target.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|_| {
                failed(
                    Error::DnsError {
                        rcode: None,
                        info_code: None,
                    },
                    format!("{name} did not resolve"),
                )
            })?
            .map(|a| a.ip())
            .collect(),
    };
    let mut refused = None;
    let allowed: Vec<IpAddr> = addresses
        .into_iter()
        .filter(|ip| match egress.refusal(*ip) {
            Some(range) => {
                refused.get_or_insert((*ip, range));
                false
            }
            None => true,
        })
        .take(MAX_ADDRESSES_TRIED)
        .collect();
    if allowed.is_empty() {
        return Err(match refused {
            Some((ip, range)) => Failure {
                error: Error::DestinationIpProhibited,
                reason: format!(
                    "{ip} is a special-purpose address ({range}), which apps may not reach"
                ),
                result: "prohibited",
            },
            None => failed(Error::DestinationNotFound, "the host has no address"),
        });
    }

    let mut last_error = None;
    for ip in allowed {
        match TcpStream::connect(SocketAddr::new(ip, target.port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return match target.scheme {
                    Scheme::Http => Ok(Box::new(tcp)),
                    Scheme::Https => tls(egress, target, tcp).await,
                };
            }
            Err(e) => last_error = Some(e),
        }
    }
    let detail = last_error.map_or_else(String::new, |e| format!(": {}", e.kind()));
    Err(failed(
        Error::ConnectionRefused,
        format!("could not connect{detail}"),
    ))
}

async fn tls(egress: &Egress, target: &Target, tcp: TcpStream) -> Result<Stream, Failure> {
    use rustls::pki_types::ServerName;
    let name = match &target.host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Name(name) => ServerName::try_from(name.clone())
            .map_err(|_| failed(Error::TlsProtocolError, "not a valid TLS server name"))?,
    };
    let connector = tokio_rustls::TlsConnector::from(egress.tls());
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(Box::new(stream)),
        Err(e) => {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            Err(if certificate {
                failed(
                    Error::TlsCertificateError,
                    "the server's certificate is not trusted",
                )
            } else {
                failed(Error::TlsProtocolError, "the TLS handshake failed")
            })
        }
    }
}

/// A response body that fails if the server goes quiet for too long.
struct BetweenBytes {
    body: hyper::body::Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|f| f.map_err(Error::from)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        this.sleep = None;
        Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
