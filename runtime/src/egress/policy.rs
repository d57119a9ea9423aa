//! The per-request gate on outgoing HTTP: the subrequest budget, the build's
//! allowlist, and the log line and metric every attempt leaves.

use super::Egress;
use super::allowlist::{EgressAllowlist, Host, Scheme, split_port};
use super::client::{self, Failure, Sent, Target};
use crate::logs::RequestLog;
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Largest write into an outgoing body, and the only chunk buffered behind
/// it. Bodies nobody reads (a response never sent, a request that is denied)
/// hold at most this much each, instead of wasmtime-wasi-http's 2 MiB.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// Longest URL quoted in a log line.
const MAX_LOGGED_URL: usize = 200;

/// What a guest's outgoing requests meet; one per incoming request.
pub(crate) struct OutboundPolicy {
    pub(crate) egress: Arc<Egress>,
    pub(crate) allowlist: Arc<EgressAllowlist>,
    pub(crate) log: Arc<RequestLog>,
    pub(crate) project: Arc<str>,
    /// Outgoing requests this incoming request may still make.
    pub(crate) remaining: u32,
}

type SendFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<Sent>> + Send>;

impl OutboundPolicy {
    fn refuse(&self, url: &str, result: &'static str, reason: String, error: Error) -> SendFuture {
        self.record(url, result, &reason);
        Box::new(async move { Err(error) })
    }

    fn record(&self, url: &str, result: &'static str, detail: &str) {
        record(&self.log, &self.project, url, result, detail);
    }

    /// The request's origin, if it is one the allowlist could name.
    fn target(request: &http::Request<WasiBody>) -> Option<Target> {
        let uri = request.uri();
        let scheme = Scheme::parse(uri.scheme_str()?)?;
        let authority = uri.authority()?.as_str();
        // Credentials in the authority are refused, never forwarded.
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_port(authority)?;
        Some(Target {
            host: Host::parse(host)?,
            port: port.unwrap_or(scheme.default_port()),
            scheme,
        })
    }
}

fn record(log: &RequestLog, project: &Arc<str>, url: &str, result: &'static str, detail: &str) {
    log.host(format!("outgoing request to {url} {detail}"));
    tracing::info!(target: "switchyard::egress", project = %project, url, result, detail);
    metrics::counter!(
        "switchyard_egress_requests_total",
        "project" => project.to_string(),
        "result" => result
    )
    .increment(1);
}

impl WasiHttpHooks for OutboundPolicy {
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io_result: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let url: String = request
            .uri()
            .to_string()
            .chars()
            .take(MAX_LOGGED_URL)
            .collect();
        let method = request.method().clone();
        // Every attempt counts, refused ones too.
        let Some(remaining) = self.remaining.checked_sub(1) else {
            let reason =
                "refused: this request has made all the outgoing requests it may".to_string();
            return self.refuse(&url, "limited", reason, Error::HttpRequestDenied);
        };
        self.remaining = remaining;
        if self.allowlist.is_empty() {
            let reason = "refused: outgoing HTTP is not enabled for this project".to_string();
            return self.refuse(&url, "denied", reason, Error::HttpRequestDenied);
        }
        let Some(target) = Self::target(&request) else {
            let reason = "refused: not an http(s) URL with a plain host".to_string();
            return self.refuse(&url, "denied", reason, Error::HttpRequestDenied);
        };
        if !self
            .allowlist
            .allows(target.scheme, &target.host, target.port)
        {
            let reason = "refused: not in this project's egress allowlist".to_string();
            return self.refuse(&url, "denied", reason, Error::HttpRequestDenied);
        }

        let egress = self.egress.clone();
        let log = self.log.clone();
        let project = self.project.clone();
        Box::new(async move {
            let started = Instant::now();
            let sent = client::send(egress, target, request, options).await;
            let ms = started.elapsed().as_millis();
            match sent {
                Ok(sent) => {
                    let status = sent.0.status().as_u16();
                    let detail = format!("({method}): {status} in {ms} ms");
                    record(&log, &project, &url, "sent", &detail);
                    Ok(sent)
                }
                Err(Failure {
                    error,
                    reason,
                    result,
                }) => {
                    let detail = format!("({method}) failed after {ms} ms: {reason}");
                    record(&log, &project, &url, result, &detail);
                    Err(error)
                }
            }
        })
    }
}
