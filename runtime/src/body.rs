//! Bodies that cross the sandbox boundary, each with its limit enforced while
//! it streams.
//!
//! - [`LimitedRequestBody`] feeds the client's body to the guest and fails the
//!   guest's read (an error, never an early end) once the limit is passed.
//! - [`ResponseBody`] streams the guest's response to the client. It counts
//!   bytes against the response limit and, at the end, waits for the guest's
//!   outcome: a guest that trapped or timed out after sending its headers
//!   gets its stream aborted, never completed as a success.

use crate::dispatch::GuestTask;
use crate::error::DispatchError;
use crate::logs::RequestLog;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The client's request body on its way to the guest, cut off with an error
/// past `limit` bytes.
pub(crate) struct LimitedRequestBody<B> {
    inner: B,
    received: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> LimitedRequestBody<B> {
    /// Wraps `inner`; `exceeded` is set once the limit is passed, so the
    /// dispatcher can answer 413 whatever the guest does next.
    pub(crate) fn new(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        LimitedRequestBody {
            inner,
            received: 0,
            limit,
            exceeded,
        }
    }
}

impl<B> Body for LimitedRequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                Some(this.received),
            ))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    if this.received > this.limit {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.received)),
                        )));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // The client broke off or sent a malformed body.
            Some(Err(_)) => Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body: either the platform's own (an error envelope) or a
/// guest's, streamed while the guest runs.
pub struct ResponseBody(Inner);

enum Inner {
    Full(Option<Bytes>),
    Guest(GuestBody),
}

struct GuestBody {
    body: HyperOutgoingBody,
    sent: u64,
    limit: u64,
    task: GuestTask,
    phase: Phase,
    log: Arc<RequestLog>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Forwarding the guest's frames.
    Streaming,
    /// The guest's body ended; waiting to learn whether the guest succeeded.
    AwaitingOutcome,
    Done,
}

impl ResponseBody {
    /// A body with all of `bytes`.
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody(Inner::Full(Some(bytes)))
    }

    pub(crate) fn guest(
        body: HyperOutgoingBody,
        limit: u64,
        task: GuestTask,
        log: Arc<RequestLog>,
    ) -> Self {
        ResponseBody(Inner::Guest(GuestBody {
            body,
            sent: 0,
            limit,
            task,
            phase: Phase::Streaming,
            log,
        }))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    /// Why the stream was aborted; the client sees a broken stream, the
    /// server's log sees the code.
    type Error = DispatchError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DispatchError>>> {
        match &mut self.0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Guest(guest) => guest.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Guest(guest) => guest.phase == Phase::Done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Guest(guest) => guest.body.size_hint(),
        }
    }
}

impl GuestBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DispatchError>>> {
        loop {
            match self.phase {
                Phase::Streaming => match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            self.sent = self.sent.saturating_add(data.len() as u64);
                            if self.sent > self.limit {
                                return self.abort(DispatchError::ResponseTooLarge);
                            }
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // The guest dropped its body unfinished, or wrote more or
                    // less than the Content-Length it declared.
                    Some(Err(e)) => {
                        return self.abort(DispatchError::BadResponse {
                            detail: format!("response body aborted: {e}"),
                        });
                    }
                    // The body ended, which also happens when the store is
                    // torn down after a trap: only the outcome tells.
                    None => self.phase = Phase::AwaitingOutcome,
                },
                Phase::AwaitingOutcome => {
                    let outcome = ready!(self.task.poll_outcome(cx));
                    self.phase = Phase::Done;
                    if let Err(e) = &outcome {
                        self.log.failure(e);
                    }
                    return Poll::Ready(outcome.err().map(Err));
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    fn abort(&mut self, error: DispatchError) -> Poll<Option<Result<Frame<Bytes>, DispatchError>>> {
        self.task.abort();
        self.phase = Phase::Done;
        self.log.failure(&error);
        Poll::Ready(Some(Err(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn request_body_past_the_limit_is_an_error_not_an_end() {
        let chunks = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"12345"))),
            Ok(Frame::data(Bytes::from_static(b"67890"))),
        ];
        let exceeded = Arc::new(AtomicBool::new(false));
        let mut body = LimitedRequestBody::new(
            StreamBody::new(futures::stream::iter(chunks)),
            8,
            exceeded.clone(),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "12345");
        assert!(matches!(
            body.frame().await,
            Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(
                10
            ))))
        ));
        assert!(exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn request_body_within_the_limit_passes_through() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body =
            LimitedRequestBody::new(Full::new(Bytes::from_static(b"hello")), 5, exceeded.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(!exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn full_bodies_report_their_size() {
        let body = ResponseBody::full(Bytes::from_static(b"abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }
}
