//! Guest stdout/stderr, captured per project into bounded buffers.
//!
//! Each request gets a budget (`per_request_bytes`); past it, one truncation
//! marker is recorded and further output is dropped, but writes keep
//! succeeding so a chatty guest is not turned into a crashing one. Each
//! project keeps at most `per_project_bytes`, dropping its oldest records.

use crate::config::LogConfig;
use crate::ids::ProjectId;
use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bookkeeping cost charged per record on top of its text, so a flood of
/// one-byte writes cannot hold more memory than the budget says.
const RECORD_OVERHEAD: u64 = 64;

/// Host messages kept per request: enough to explain a failure, too few for a
/// guest to flush its project's log by provoking them.
const HOST_MESSAGES_PER_REQUEST: u32 = 16;

/// Where a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
    /// Switchyard itself, about the guest (a trap, a denied request, a
    /// truncation).
    Host,
}

/// One captured write (or host message).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// Increases by one per record of a project; lets a reader resume.
    pub seq: u64,
    /// When it was written.
    #[serde(with = "unix_millis")]
    pub time: SystemTime,
    /// The request that wrote it.
    pub request_id: Arc<str>,
    /// Where it came from.
    pub source: LogSource,
    /// The text, with invalid UTF-8 replaced.
    pub message: String,
}

/// One project's captured output.
#[derive(Debug)]
pub struct ProjectLog {
    capacity: u64,
    state: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    records: VecDeque<LogRecord>,
    bytes: u64,
    next_seq: u64,
}

impl ProjectLog {
    pub(crate) fn new(capacity: u64) -> Self {
        ProjectLog {
            capacity,
            state: Mutex::default(),
        }
    }

    /// Records with `seq >= from`, oldest first, at most `max` of them.
    pub fn read(&self, from: u64, max: usize) -> Vec<LogRecord> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .records
            .iter()
            .filter(|r| r.seq >= from)
            .take(max)
            .cloned()
            .collect()
    }

    /// Bytes currently held, overhead included.
    pub fn bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    pub(crate) fn push(&self, request_id: &Arc<str>, source: LogSource, message: String) {
        let cost = message.len() as u64 + RECORD_OVERHEAD;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.bytes += cost;
        state.records.push_back(LogRecord {
            seq,
            time: SystemTime::now(),
            request_id: request_id.clone(),
            source,
            message,
        });
        while state.bytes > self.capacity {
            let Some(old) = state.records.pop_front() else {
                break;
            };
            state.bytes -= old.message.len() as u64 + RECORD_OVERHEAD;
        }
    }
}

/// Every project's log. Each counts as its full capacity against
/// `total_bytes`; past that, moka evicts the logs of the least used projects.
/// A request looks its project's log up when it starts, so an evicted log is
/// never written to again.
pub(crate) struct LogRegistry {
    config: LogConfig,
    projects: moka::sync::Cache<ProjectId, Arc<ProjectLog>>,
}

impl LogRegistry {
    pub(crate) fn new(config: LogConfig) -> Self {
        let weight = u32::try_from(config.per_project_bytes).unwrap_or(u32::MAX);
        LogRegistry {
            projects: moka::sync::Cache::builder()
                .max_capacity(config.total_bytes)
                .weigher(move |_, _| weight)
                .build(),
            config,
        }
    }

    /// The log of `project`, created if it has none.
    fn project(&self, project: &ProjectId) -> Arc<ProjectLog> {
        let capacity = self.config.per_project_bytes;
        self.projects
            .get_with_by_ref(project, || Arc::new(ProjectLog::new(capacity)))
    }

    pub(crate) fn get(&self, project: &ProjectId) -> Option<Arc<ProjectLog>> {
        self.projects.get(project)
    }

    /// Drops `project`'s log: requests that start later get a new, empty one.
    pub(crate) fn remove(&self, project: &ProjectId) {
        self.projects.invalidate(project);
    }

    /// A new request's share of `project`'s log.
    pub(crate) fn request(&self, project: &ProjectId, request_id: Arc<str>) -> Arc<RequestLog> {
        RequestLog::new(
            self.project(project),
            request_id,
            self.config.per_request_bytes,
        )
    }
}

/// One request's share of its project's log.
pub(crate) struct RequestLog {
    log: Arc<ProjectLog>,
    request_id: Arc<str>,
    remaining: AtomicU64,
    truncated: AtomicBool,
    budget: u64,
    host_messages: AtomicU32,
}

impl RequestLog {
    pub(crate) fn new(log: Arc<ProjectLog>, request_id: Arc<str>, budget: u64) -> Arc<Self> {
        Arc::new(RequestLog {
            log,
            request_id,
            remaining: AtomicU64::new(budget),
            truncated: AtomicBool::new(false),
            budget,
            host_messages: AtomicU32::new(0),
        })
    }

    /// Explains a failed request in the project's log.
    pub(crate) fn failure(&self, error: &crate::error::DispatchError) {
        self.host(match error.detail() {
            Some(detail) => format!("request failed with {}: {detail}", error.code()),
            None => format!("request failed with {}: {error}", error.code()),
        });
    }

    /// Records a message from the host about this request. Host messages
    /// explain failures, so they do not count against the output budget;
    /// they have a small cap of their own instead.
    pub(crate) fn host(&self, message: String) {
        let n = self.host_messages.fetch_add(1, Ordering::Relaxed);
        if n < HOST_MESSAGES_PER_REQUEST {
            self.log.push(&self.request_id, LogSource::Host, message);
        } else if n == HOST_MESSAGES_PER_REQUEST {
            let note = "[further host messages for this request suppressed]".to_string();
            self.log.push(&self.request_id, LogSource::Host, note);
        }
    }

    fn write(&self, source: LogSource, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let want = bytes.len() as u64;
        let granted = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(want))
            })
            .unwrap_or(0)
            .min(want);
        if granted > 0 {
            let granted = usize::try_from(granted).unwrap_or(bytes.len());
            let text = String::from_utf8_lossy(&bytes[..granted]);
            let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
            self.log.push(&self.request_id, source, text);
        }
        if granted < want && !self.truncated.swap(true, Ordering::Relaxed) {
            self.host(format!(
                "[output truncated: this request reached its log limit of {} bytes]",
                self.budget
            ));
        }
    }
}

/// A guest's stdout or stderr, as wasmtime-wasi wants it.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    request: Arc<RequestLog>,
    source: LogSource,
}

impl GuestOutput {
    pub(crate) fn new(request: Arc<RequestLog>, source: LogSource) -> Self {
        GuestOutput { request, source }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.request.write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.request.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        s.serialize_u128(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(capacity: u64, budget: u64) -> (Arc<ProjectLog>, Arc<RequestLog>) {
        let log = Arc::new(ProjectLog::new(capacity));
        let req = RequestLog::new(log.clone(), "req-1".into(), budget);
        (log, req)
    }

    #[test]
    fn records_writes_with_their_source() {
        let (log, req) = request(10_000, 1000);
        req.write(LogSource::Stdout, b"hello\n");
        req.write(LogSource::Stderr, b"oops\n");
        let records = log.read(0, 10);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].message, "hello");
        assert_eq!(records[0].source, LogSource::Stdout);
        assert_eq!(records[1].source, LogSource::Stderr);
        assert_eq!(&*records[1].request_id, "req-1");
        assert_eq!(log.read(1, 10).len(), 1, "resume by sequence number");
    }

    #[test]
    fn per_request_budget_truncates_once_and_keeps_accepting() {
        let (log, req) = request(1_000_000, 10);
        req.write(LogSource::Stdout, b"0123456789abcdef");
        req.write(LogSource::Stdout, b"more");
        req.write(LogSource::Stdout, b"and more");
        let records = log.read(0, 10);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].message, "0123456789");
        assert_eq!(records[1].source, LogSource::Host);
        assert!(records[1].message.contains("truncated"));
    }

    #[test]
    fn project_capacity_drops_oldest_records() {
        let (log, req) = request(3 * (RECORD_OVERHEAD + 1), u64::MAX);
        for c in ["a", "b", "c", "d", "e"] {
            req.write(LogSource::Stdout, c.as_bytes());
        }
        let kept: Vec<_> = log.read(0, 10).into_iter().map(|r| r.message).collect();
        assert_eq!(kept, ["c", "d", "e"]);
        assert!(log.bytes() <= 3 * (RECORD_OVERHEAD + 1));
    }

    #[test]
    fn host_messages_are_capped_per_request() {
        let (log, req) = request(1_000_000, 0);
        for i in 0..100 {
            req.host(format!("message {i}"));
        }
        let records = log.read(0, 1000);
        assert_eq!(records.len(), HOST_MESSAGES_PER_REQUEST as usize + 1);
        assert!(records.last().unwrap().message.contains("suppressed"));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (log, req) = request(10_000, 1000);
        req.write(LogSource::Stdout, &[0x66, 0xff, 0x6f]);
        assert_eq!(log.read(0, 1)[0].message, "f\u{fffd}o");
    }
}
