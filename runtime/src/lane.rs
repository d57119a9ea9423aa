//! The background lane: where a guest that keeps computing finishes its run.
//!
//! Every guest starts in its caller's task, on the server's own threads,
//! and most end there within a millisecond. A guest whose polls have taken
//! `runtime.background_after_ms` on that thread (its wasm and its host
//! calls; time spent waiting between polls does not count) moves here: a small
//! runtime of its own (one thread per CPU) whose threads run at the lowest
//! CPU priority (nice 19). The kernel then gives the server's threads —
//! accepting, routing, assets and the short requests of every tenant — the
//! CPU first, and CPU-bound guests share what is left, taking turns at
//! every epoch tick. When the server is idle they get all of it.
//!
//! The lane lives as long as the process (a runtime cannot be dropped from
//! inside another), and is started on first use. If it cannot be started,
//! guests stay where they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The lowest priority: a thread at nice 19 has 1/68th of the weight of
/// one at 0 when both want the CPU.
const NICE: libc::c_int = 19;

/// A guest's run, moved to the lane; dropping it aborts the run (as the
/// caller dropping the guest in place would have dropped it).
pub(crate) struct Background<T> {
    handle: JoinHandle<Option<T>>,
    abandoned: Arc<Mutex<bool>>,
}

/// Moves `run` to the lane, or hands it back if there is no lane.
pub(crate) fn spawn<F>(run: Pin<Box<F>>) -> Result<Background<F::Output>, Pin<Box<F>>>
where
    F: Future + Send + ?Sized + 'static,
    F::Output: Send + 'static,
{
    match lane() {
        Some(lane) => {
            let abandoned = Arc::new(Mutex::new(false));
            let run = Leashed {
                run,
                abandoned: abandoned.clone(),
            };
            Ok(Background {
                handle: lane.spawn(run),
                abandoned,
            })
        }
        None => Err(run),
    }
}

impl<T> Future for Background<T> {
    /// `None` if the run panicked (the panic is the lane's to report).
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| joined.ok().flatten())
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        // Waits out a poll in progress on the lane (at most about one
        // epoch tick): the run may hold timers of the caller's runtime,
        // which, when the caller's runtime is shutting down, must not be
        // polled again once its tasks (and so this handle) are dropped.
        *self
            .abandoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.handle.abort();
    }
}

/// The run as the lane polls it: never again once its [`Background`]
/// handle is gone.
struct Leashed<F: ?Sized> {
    run: Pin<Box<F>>,
    abandoned: Arc<Mutex<bool>>,
}

impl<F: Future + ?Sized> Future for Leashed<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Leashed { run, abandoned } = self.get_mut();
        let abandoned = abandoned.lock().unwrap_or_else(PoisonError::into_inner);
        if *abandoned {
            return Poll::Ready(None);
        }
        run.as_mut().poll(cx).map(Some)
    }
}

fn lane() -> Option<&'static Runtime> {
    static LANE: OnceLock<Option<Runtime>> = OnceLock::new();
    LANE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("switchyard-background")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::error!(error = %e, "cannot start the background lane; CPU-bound guests stay on the server's threads");
            })
            .ok()
    })
    .as_ref()
}

/// Sets this thread's nice value to [`NICE`]. Raising one's own nice value
/// needs no privilege; if it fails anyway, the lane still separates
/// CPU-bound guests from the server's threads, without the priority.
fn lower_priority() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on this thread's own id reads no memory of ours.
    let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
    if done != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the background lane's priority"
        );
    }
}
