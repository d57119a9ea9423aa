//! The request path through the sandbox, in the order it happens:
//!
//! 1. refuse a request body whose declared length is over the limit (413);
//! 2. build a fresh store: fuel, memory limiter, wall-clock deadline;
//! 3. run the guest (instantiate, then `wasi:http/incoming-handler.handle`)
//!    in the caller's task until it has sent the response head or ended;
//! 4. a guest whose polls have taken `background_after` on the caller's
//!    thread (waiting between polls excluded) without answering moves to
//!    the background lane ([`crate::lane`]), at the lowest CPU priority, so
//!    CPU-bound guests cannot hold the server's threads;
//!    a guest still running once its head is out (streaming the body) moves
//!    to a task of its own, so the body does not depend on the client
//!    reading it for the guest to reach its deadline;
//! 5. check the head (declared size, header count) and hand back a streaming
//!    body that enforces the response limit and, at its end, reports how the
//!    guest finished.
//!
//! Most guests answer and end within one poll: for them there is no task to
//! spawn, no hand-off between tasks, and their pool slot is free again
//! before the caller's task moves on, so the next request reuses it warm.
//! If the caller drops the future or the body (the client went away), the
//! guest is dropped (or its task aborted) with it.

use crate::app::App;
use crate::body::{LimitedRequestBody, ResponseBody};
use crate::error::DispatchError;
use crate::limits::LimitHit;
use crate::logs::RequestLog;
use crate::state::RequestState;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body::Body;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{FieldMapError, WasiHttpView};

/// Most headers a guest's response may carry. Many HTTP clients refuse
/// responses with more.
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// What the router knows about a request that the guest does not see in it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Identifies the request in logs and error bodies.
    pub request_id: Arc<str>,
    /// Whether the client connected over TLS.
    pub tls: bool,
}

/// The guest ran past its wall-clock deadline while executing.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wall-clock deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl App {
    /// Runs one request in a fresh instance of this app.
    ///
    /// The request must carry an authority (in its URI or a `Host` header).
    /// On success the response head is the guest's and its body streams
    /// while the guest runs; a failure after the head was returned aborts the
    /// body stream with the error instead of ending it cleanly. Every failure
    /// except `CAPACITY` is explained in the project's log.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        ctx: RequestContext,
    ) -> Result<http::Response<ResponseBody>, DispatchError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
    {
        // Refused before anything is spent on the request, and not logged:
        // logging every refusal would let an overload flush the log.
        let slot = self
            .tenant
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| DispatchError::Capacity)?;
        let log = self
            .tenant
            .logs
            .request(&self.tenant.project, ctx.request_id);
        let result = self.dispatch(request, ctx.tls, &log, slot).await;
        if let Err(e) = &result {
            log.failure(e);
        }
        result
    }

    async fn dispatch<B>(
        &self,
        request: http::Request<B>,
        tls: bool,
        log: &Arc<RequestLog>,
        slot: OwnedSemaphorePermit,
    ) -> Result<http::Response<ResponseBody>, DispatchError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
    {
        let limits = &self.tenant.limits;
        if declared_length(request.headers()).is_some_and(|n| n > limits.request_body_bytes) {
            return Err(DispatchError::PayloadTooLarge);
        }
        let body_too_large = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            LimitedRequestBody::new(body, limits.request_body_bytes, body_too_large.clone())
        });

        let deadline = Instant::now() + std::time::Duration::from_millis(limits.wall_clock_ms);
        let mut store = self.new_store(log, slot, deadline)?;
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(scheme, request).map_err(|e| {
                DispatchError::BadRequest {
                    detail: format!("{e:#}"),
                }
            })?;
            let out = http.new_response_outparam(sender).map_err(internal)?;
            (req, out)
        };
        let mut guest: GuestFuture =
            Box::pin(run_guest(store, self.pre.clone(), req, out, deadline));
        let mut receiver = receiver;
        // The time this thread spends inside the guest's polls: its wasm
        // and the host calls it makes, not time spent waiting between polls
        // (behind other requests, on its database, in a sleep). A computing
        // guest returns at every epoch tick, so this is checked at least
        // that often.
        let mut computed = std::time::Duration::ZERO;
        let mut in_place = true;
        let first = loop {
            let step = poll_fn(|cx| {
                let before = Instant::now();
                let polled = guest.as_mut().poll(cx);
                computed += before.elapsed();
                if let Poll::Ready(outcome) = polled {
                    return Poll::Ready(Step::First(First::Ended(outcome)));
                }
                if let Poll::Ready(head) = Pin::new(&mut receiver).poll(cx) {
                    return Poll::Ready(Step::First(First::Head(head)));
                }
                if in_place
                    && self
                        .tenant
                        .background_after
                        .is_some_and(|after| computed >= after)
                {
                    return Poll::Ready(Step::Heavy);
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::First(first) => break first,
                // Still computing: finish on the background lane, so the
                // server's threads stay free for everyone else's requests.
                Step::Heavy => {
                    in_place = false;
                    guest = match crate::lane::spawn(guest) {
                        Ok(moved) => Box::pin(async move {
                            moved
                                .await
                                .unwrap_or_else(|| Err(internal("the guest's run panicked")))
                        }),
                        Err(guest) => guest,
                    };
                }
            }
        };
        let (sent, mut task) = match first {
            First::Ended(outcome) => (receiver.try_recv().ok(), GuestTask::ended(outcome)),
            First::Head(Ok(head)) => (Some(head), GuestTask::spawn(guest)),
            // The guest dropped its response slot unset and runs on: its
            // outcome says why there is no response.
            First::Head(Err(_)) => (None, GuestTask::ended(guest.await)),
        };
        let head = match sent {
            Some(Ok(head)) => Ok(head),
            Some(Err(code)) => Err(DispatchError::BadResponse {
                detail: format!("the app answered with error {code:?}"),
            }),
            // The guest ended without setting its response.
            None => Err(match task.outcome().await {
                Ok(()) => DispatchError::NoResponse,
                Err(e) => e,
            }),
        };
        if body_too_large.load(Ordering::Relaxed) {
            return Err(DispatchError::PayloadTooLarge);
        }
        let head = head?;

        if declared_length(head.headers()).is_some_and(|n| n > limits.response_body_bytes) {
            return Err(DispatchError::ResponseTooLarge);
        }
        if head.headers().len() > MAX_RESPONSE_HEADERS {
            return Err(DispatchError::BadResponse {
                detail: format!(
                    "the response has {} headers; at most {MAX_RESPONSE_HEADERS} are allowed",
                    head.headers().len()
                ),
            });
        }
        let limit = limits.response_body_bytes;
        let log = log.clone();
        Ok(head.map(|body| ResponseBody::guest(body, limit, task, log)))
    }

    fn new_store(
        &self,
        log: &Arc<RequestLog>,
        slot: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<Store<RequestState>, DispatchError> {
        let limits = &self.tenant.limits;
        let state = RequestState::new(self.tenant.clone(), log, slot);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.fuel).map_err(internal)?;
        store.set_hostcall_fuel(usize::try_from(limits.hostcall_bytes).unwrap_or(usize::MAX));
        store.set_max_component_handles(limits.resource_handles as usize);
        // Called once per epoch tick while wasm runs: yield the worker
        // thread so a spinning guest cannot hold it, or trap once the
        // deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// Instantiates the app and runs its handler under the deadline, then turns
/// a failure into the error the client will see.
async fn run_guest(
    mut store: Store<RequestState>,
    pre: ProxyPre<RequestState>,
    request: Resource<HostIncomingRequest>,
    response_out: Resource<HostResponseOutparam>,
    deadline: Instant,
) -> Result<(), DispatchError> {
    // The epoch check only runs while wasm executes; this also covers a
    // guest blocked in the host (sleeping on a pollable, for instance).
    let run = async {
        let started = Instant::now();
        let proxy = pre.instantiate_async(&mut store).await?;
        store
            .data()
            .tenant
            .metrics
            .instantiate
            .record(started.elapsed());
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, response_out)
            .await
    };
    let outcome = match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(classify(error, store.data())),
        Err(_) => Err(DispatchError::Timeout),
    };
    let tenant = &store.data().tenant;
    let used = tenant
        .limits
        .fuel
        .saturating_sub(store.get_fuel().unwrap_or(0));
    tenant.metrics.fuel_used.increment(used);
    tenant
        .metrics
        .run_ended(outcome.as_ref().map(|_| ()).map_err(DispatchError::code));
    outcome
}

/// Names a guest failure. Deadline and fuel come first (a guest that hit a
/// memory limit, coped, and then spun is a timeout), then causes that name
/// themselves (pool exhaustion, an oversized header set, `exit`), then a
/// memory or table limit the guest ran into, since the trap that follows one
/// (an allocator aborting) is only its symptom.
fn classify(error: wasmtime::Error, state: &RequestState) -> DispatchError {
    if error.is::<DeadlineExceeded>() {
        return DispatchError::Timeout;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return DispatchError::CpuExhausted,
        Some(Trap::Interrupt) => return DispatchError::Timeout,
        _ => {}
    }
    if error.is::<PoolConcurrencyLimitError>() {
        return DispatchError::Capacity;
    }
    let limits = &state.tenant.limits;
    // wasmtime-wasi-http traps (rather than returning an error value) when a
    // guest builds a header set larger than `http_field_bytes`.
    if let Some(FieldMapError::TotalSizeTooBig) = error.downcast_ref::<FieldMapError>() {
        return DispatchError::BadResponse {
            detail: format!(
                "a header set grew past the limit of {} bytes",
                limits.http_field_bytes
            ),
        };
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return DispatchError::Trap {
            detail: format!("the app called exit({})", exit.0),
        };
    }
    match state.limiter.hit {
        Some(LimitHit::Memory) => DispatchError::Memory {
            detail: format!(
                "memory limit of {} bytes reached: {error:#}",
                limits.memory_bytes
            ),
        },
        Some(LimitHit::Table) => DispatchError::Memory {
            detail: format!(
                "table limit of {} elements reached: {error:#}",
                limits.table_elements
            ),
        },
        None => DispatchError::Trap {
            detail: format!("{error:#}"),
        },
    }
}

fn internal(error: impl std::fmt::Display) -> DispatchError {
    DispatchError::Internal {
        detail: error.to_string(),
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A guest run, boxed so it can move to a task of its own mid-way.
type GuestFuture = Pin<Box<dyn Future<Output = Result<(), DispatchError>> + Send>>;

/// What the first stretch of a guest run produced.
enum First {
    /// The guest ended (its response, if any, is in the channel).
    Ended(Result<(), DispatchError>),
    /// The guest set its response (or dropped the slot) and runs on.
    Head(Result<GuestResponse, tokio::sync::oneshot::error::RecvError>),
}

/// One wait for the first stretch: it ended, or the guest's polls have
/// taken `background_after` without it ending or answering.
enum Step {
    First(First),
    Heavy,
}

type GuestResponse = Result<
    http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
    wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
>;

/// How a guest's run ends, for the response body to report: already ended,
/// or still running on a task of its own, aborted when this is dropped
/// unfinished (nobody is left to read the response).
pub(crate) struct GuestTask {
    state: TaskState,
}

enum TaskState {
    Ended(Option<Result<(), DispatchError>>),
    Running(JoinHandle<Result<(), DispatchError>>),
    Reported,
}

impl GuestTask {
    fn ended(outcome: Result<(), DispatchError>) -> Self {
        GuestTask {
            state: TaskState::Ended(Some(outcome)),
        }
    }

    fn spawn(guest: GuestFuture) -> Self {
        GuestTask {
            state: TaskState::Running(tokio::spawn(guest)),
        }
    }

    /// Polls for the guest's outcome. Once it has been returned (or the task
    /// aborted), later polls report success: there is nothing left to report.
    pub(crate) fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DispatchError>> {
        let outcome = match &mut self.state {
            TaskState::Ended(outcome) => outcome.take().unwrap_or(Ok(())),
            TaskState::Running(handle) => ready!(Pin::new(handle).poll(cx))
                .unwrap_or_else(|e| Err(internal(format!("the guest task failed: {e}")))),
            TaskState::Reported => Ok(()),
        };
        self.state = TaskState::Reported;
        Poll::Ready(outcome)
    }

    async fn outcome(&mut self) -> Result<(), DispatchError> {
        poll_fn(|cx| self.poll_outcome(cx)).await
    }

    pub(crate) fn abort(&mut self) {
        if let TaskState::Running(handle) = &self.state {
            handle.abort();
        }
        self.state = TaskState::Reported;
    }
}

impl Drop for GuestTask {
    fn drop(&mut self) {
        self.abort();
    }
}
