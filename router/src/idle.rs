//! When a connection counts as idle, and closing it then.
//!
//! Bytes alone are the wrong measure both ways: an HTTP/2 connection with no
//! requests stays "busy" forever answering keep-alive pings, and a request
//! whose handler works for a long time (a deploy compiling) moves no bytes
//! while it is anything but idle. So a connection is in one of three states:
//!
//! - a handler is running: never idle (handlers bound their own time: the
//!   sandbox's wall clock, upload inactivity timeouts, the compile queue);
//! - a response body is being sent: idle once no byte has moved either way
//!   for the idle time (a client that stops reading);
//! - no request in flight: idle once the idle time has passed since the last
//!   request finished (or the connection opened), whatever bytes move.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a handler waits for the next bytes of a request body before it
/// gives up: a running handler keeps its connection open, so handlers that
/// read bodies bound the wait themselves.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the requests of one connection are doing.
#[derive(Debug)]
pub struct Activity {
    handlers: AtomicUsize,
    streaming: AtomicUsize,
    opened: Instant,
    /// When a request last finished, in ms after `opened`.
    last_finished_ms: AtomicU64,
}

impl Activity {
    /// The activity of a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            handlers: AtomicUsize::new(0),
            streaming: AtomicUsize::new(0),
            opened: Instant::now(),
            last_finished_ms: AtomicU64::new(0),
        })
    }

    /// Marks a handler as running until the guard is dropped.
    pub fn handler(self: &Arc<Self>) -> InFlight {
        self.handlers.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: self.clone(),
            counter: Counter::Handlers,
        }
    }

    /// Marks a response body as being sent until the guard is dropped.
    pub fn streaming(self: &Arc<Self>) -> InFlight {
        self.streaming.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: self.clone(),
            counter: Counter::Streaming,
        }
    }

    fn last_finished(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_finished_ms.load(Ordering::SeqCst))
    }
}

#[derive(Debug)]
enum Counter {
    Handlers,
    Streaming,
}

/// Part of a request in flight; dropping it ends that part.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    counter: Counter,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        let elapsed = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity
            .last_finished_ms
            .fetch_max(elapsed, Ordering::SeqCst);
        let counter = match self.counter {
            Counter::Handlers => &activity.handlers,
            Counter::Streaming => &activity.streaming,
        };
        counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection's I/O, failing with `TimedOut` once the connection is
/// idle for `idle` (see the module docs), which makes hyper close it.
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    activity: Arc<Activity>,
    last_byte: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`, whose requests report to `activity`.
    pub fn new(inner: T, idle: Duration, activity: Arc<Activity>) -> Self {
        IdleTimeout {
            inner,
            idle,
            activity,
            last_byte: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_byte = Instant::now();
        }
    }

    /// When the connection becomes idle, given what it is doing now.
    fn deadline(&self, now: Instant) -> Instant {
        if self.activity.handlers.load(Ordering::SeqCst) > 0 {
            now + self.idle
        } else if self.activity.streaming.load(Ordering::SeqCst) > 0 {
            self.last_byte + self.idle
        } else {
            self.activity.last_finished() + self.idle
        }
    }

    /// Whether the connection is idle; if not, the timer is re-armed for
    /// the next point it could be (and wakes this task then).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let deadline = self.deadline(now);
            if deadline <= now {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.moved(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
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
                let read = buf.filled().len() - before;
                self.moved(read);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_millis(100);

    async fn read_one(server: &mut IdleTimeout<tokio::io::DuplexStream>) -> io::Result<u8> {
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.map(|_| byte[0])
    }

    #[tokio::test(start_paused = true)]
    async fn without_requests_bytes_do_not_keep_a_connection_open() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, IDLE, Activity::new());
        // Pings and the like: bytes, but no request.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(b"p").await.unwrap();
            read_one(&mut server).await.unwrap();
        }
        // Past the idle time since the connection opened: the first wait
        // for more bytes ends it, at once.
        let started = Instant::now();
        let err = read_one(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_handler_keeps_a_silent_connection_open() {
        let (_client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut server = IdleTimeout::new(server, IDLE, activity.clone());
        let handler = activity.handler();
        let read = tokio::time::timeout(IDLE * 10, read_one(&mut server)).await;
        assert!(read.is_err(), "still waiting after ten idle periods");
        // Once it finishes, the idle time counts from then.
        drop(handler);
        let started = Instant::now();
        let err = read_one(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_being_sent_stays_open_while_bytes_move() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut server = IdleTimeout::new(server, IDLE, activity.clone());
        let _streaming = activity.streaming();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            client.write_all(b"x").await.unwrap();
            read_one(&mut server).await.unwrap();
        }
        // A client that stops reading and writing: closed once the idle
        // time has passed since the last byte (not at once, as it would be
        // with no request in flight: the connection is 300 ms old).
        let started = Instant::now();
        let err = read_one(&mut server).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), IDLE);
    }
}
