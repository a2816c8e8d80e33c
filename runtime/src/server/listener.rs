//! The HTTP accept loop: hyper's HTTP/1.1 connections with the limits `axum::serve` cannot
//! set, so slow or silent clients cannot hold the server's connections or file descriptors.
//!
//! - **Header read timeout**: a request head (request line and headers) must arrive whole
//!   within this time, counted from the accept for a new connection and from the first byte of
//!   the next request on a kept-alive one. A connection that sends nothing, or trickles header
//!   bytes, is closed (without a response) once it is over.
//! - **Idle timeout**: a kept-alive connection may wait this long for its next request, and a
//!   response may go this long without the client taking any of its bytes.
//! - **Connection cap**: at most this many connections are served at once. One accepted beyond
//!   the cap is answered at once, without reading its request, with `503` and a JSON error
//!   (`overloaded`) and `Connection: close`, and closed; the accept loop never waits on it.
//! - **Shutdown**: the loop stops accepting; connections between requests, or still sending a
//!   request head, are closed at once; those with a request in flight close after its response.
//!   The server waits for that up to the grace period (every connection holds a slot of the
//!   cap until it is closed, so all slots back means drained).
//!
//! The request itself (reading its body and answering) is bounded by the router's request
//! timeout ([`super::http::router`]). hyper's own `header_read_timeout` is not used: it starts
//! when a kept-alive connection goes idle, so it would also be the idle timeout. Instead each
//! connection records its phase in one atomic word (no lock, no allocation per request) and a
//! per-connection watchdog, re-armed only when it fires, closes it once its phase is over time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Default for [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default for [`Limits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default for [`Limits::max_connections`] (lowered to fit the open-file limit, see
/// [`connection_cap`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept free for everything but connections (the artifact, stdio, the
/// runtime, and accepting one connection over the cap to refuse it).
pub const RESERVED_FDS: u64 = 64;
/// Largest request head (and read buffer) per connection; larger heads get `431`. hyper's
/// default (~400 KiB) would let a thousand connections pin ~400 MiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long an accept error (EMFILE, ENFILE, ENOBUFS, ...) pauses the accept loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this period for repeated accept errors and refusals.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive whole within this time (see the module docs).
    pub header_read_timeout: Duration,
    /// A kept-alive connection may wait this long for its next request.
    pub idle_timeout: Duration,
    /// The router's request timeout; a request still unanswered after it plus the header read
    /// timeout means a stuck connection, which is closed.
    pub request_timeout: Duration,
    /// How long a chat answer may take before its head is sent (the LLM's deadline, twice when
    /// a summary is due, and a margin); the busy limit is the longer of this and
    /// `request_timeout`. Zero without an LLM.
    pub chat_timeout: Duration,
    /// Connections served at once; more are refused with 503.
    pub max_connections: usize,
    /// After the shutdown signal, how long in-flight requests may take to finish.
    pub grace: Duration,
}

/// The soft limit on open files of this process, if the platform tells (Linux:
/// `/proc/self/limits`). `None` when unknown or unlimited.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The connection cap to use when `requested` were asked for under an open-file limit of
/// `nofile`: at most `nofile - RESERVED_FDS`, and at least 1.
pub fn connection_cap(requested: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => requested.min(usize::try_from(n.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX)).max(1),
        None => requested.max(1),
    }
}

/// Serve `app` on `listener` with `limits` until `shutdown` resolves, then stop accepting and
/// let in-flight requests finish for up to `limits.grace`.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let epoch = Instant::now();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our watchdog times reading heads (see the module docs); hyper's timer would also cut
    // idle kept-alive connections at the header read timeout.
    http.header_read_timeout(None).max_buf_size(MAX_HEAD_BYTES);
    let cap = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(cap));
    let refusal = overloaded_response();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_errors = RateLimitedLog::default();
    let mut refusals = RateLimitedLog::default();
    let mut shutdown = pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: retrying at once would spin.
                accept_errors.note(|n| tracing::error!(error = %e, errors = n, "accept failed; backing off"));
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, &refusal);
            refusals.note(|n| {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused = n,
                    "connection cap reached; refusing with 503"
                )
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(epoch));
        let io = TokioIo::new(WatchedIo { stream, activity: activity.clone() });
        let service = Tracked { inner: TowerToHyperService::new(app.clone()), activity: activity.clone() };
        let conn = http.serve_connection(io, service);
        tokio::spawn(serve_connection(conn, activity, limits, stop_rx.clone(), slot));
    }

    drop(listener);
    tracing::info!(grace_secs = limits.grace.as_secs(), "shutting down: draining in-flight requests");
    stop_tx.send_replace(true);
    // Every connection holds a slot until it is closed: all slots back means all drained.
    if tokio::time::timeout(limits.grace, slots.acquire_many(cap as u32)).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Serve one connection until it ends, its watchdog fires, or shutdown finds it without a
/// request in flight; the slot is freed when it is closed.
async fn serve_connection<S>(
    conn: hyper::server::conn::http1::Connection<TokioIo<WatchedIo>, S>,
    activity: Arc<Activity>,
    limits: Limits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(conn);
    let mut watchdog = pin!(watchdog(&activity, &limits));
    // The stop is checked on every wake-up, not only when its notification arrives: the
    // notifications of all connections go out one after the other, and this connection may
    // read its next bytes before its own arrives.
    let probe = stopping.clone();
    let mut notified = pin!(stopping.changed());
    let mut stop = std::future::poll_fn(move |cx| {
        if probe.has_changed().unwrap_or(true) {
            return Poll::Ready(());
        }
        notified.as_mut().poll(cx).map(|_| ())
    });
    let mut stopped = false;
    loop {
        tokio::select! {
            // Shutdown first: a response written in the same wake-up then says `Connection: close`.
            biased;
            () = &mut stop, if !stopped => {
                stopped = true;
                tracing::debug!(phase = activity.phase(), "shutdown reached the connection");
                // hyper closes the connection now if it is between requests, or after the
                // response in flight. One that has not sent a whole request head yet has
                // nothing in flight, and hyper would wait for it: close it here.
                if activity.phase() == HEAD {
                    break;
                }
                conn.as_mut().graceful_shutdown();
            }
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            phase = watchdog.as_mut() => {
                tracing::debug!(phase, "closing a connection over its time limit");
                break;
            }
        }
    }
    drop(slot);
}

/// Errors of one connection that say nothing about the listener (axum::serve's list).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The answer to a connection over the cap: a complete HTTP/1.1 response that closes.
fn overloaded_response() -> Vec<u8> {
    let body = r#"{"error":{"code":"overloaded","message":"the server has too many open connections; retry later"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer 503 without waiting on the client: whatever of its request has arrived is read (so
/// the close is a FIN, not a reset, in the usual case), the response goes into the fresh
/// socket's send buffer, and the socket is closed. Plain non-blocking system calls on the std
/// socket: tokio's `try_read`/`try_write` would not even try before its driver has seen the
/// new socket become ready.
fn refuse(stream: TcpStream, response: &[u8]) {
    use std::io::{Read as _, Write as _};
    let Ok(mut socket) = stream.into_std() else { return };
    let mut scratch = [0u8; 1024];
    for _ in 0..8 {
        match socket.read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = socket.write(response);
}

/// Logs the first event at once and then at most once per [`LOG_EVERY`], with how many
/// events the line stands for.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    fn note(&mut self, log: impl FnOnce(u64)) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            log(self.unlogged);
            self.unlogged = 0;
            self.last = Some(now);
        }
    }
}

/// What a connection is doing, and since when: the phase in the top two bits, milliseconds
/// since the server's epoch below. Written and read only from the connection's own task.
struct Activity {
    word: AtomicU64,
    epoch: Instant,
}

/// Waiting for, or reading, a request head (from the accept, or from the first byte of the
/// next request).
const HEAD: u64 = 0;
/// A request head arrived; the router has not answered yet.
const BUSY: u64 = 1;
/// Answered: writing the response, or waiting for the next request.
const IDLE: u64 = 2;
const PHASE_SHIFT: u32 = 62;

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let a = Activity { word: AtomicU64::new(0), epoch };
        a.enter(HEAD);
        a
    }

    fn phase(&self) -> u64 {
        self.word.load(Ordering::Relaxed) >> PHASE_SHIFT
    }

    fn enter(&self, phase: u64) {
        let ms = self.epoch.elapsed().as_millis() as u64 & ((1 << PHASE_SHIFT) - 1);
        self.word.store(phase << PHASE_SHIFT | ms, Ordering::Relaxed);
    }

    /// The phase, and when it has to be over.
    fn deadline(&self, limits: &Limits) -> (u64, Instant) {
        let word = self.word.load(Ordering::Relaxed);
        let phase = word >> PHASE_SHIFT;
        let since = self.epoch + Duration::from_millis(word & ((1 << PHASE_SHIFT) - 1));
        let allowed = match phase {
            HEAD => limits.header_read_timeout,
            BUSY => limits.request_timeout.max(limits.chat_timeout) + limits.header_read_timeout,
            _ => limits.idle_timeout,
        };
        (phase, since + allowed)
    }
}

/// Resolves, with the phase's name, once the connection has been in one phase for longer than
/// it may. Wakes only at deadlines, and sleeps again if the phase moved on meanwhile.
async fn watchdog(activity: &Activity, limits: &Limits) -> &'static str {
    let (_, first) = activity.deadline(limits);
    let mut sleep = pin!(tokio::time::sleep_until(first.into()));
    loop {
        sleep.as_mut().await;
        let (phase, deadline) = activity.deadline(limits);
        if Instant::now() >= deadline {
            return match phase {
                HEAD => "reading the request head",
                BUSY => "answering",
                _ => "idle",
            };
        }
        sleep.as_mut().reset(deadline.into());
    }
}

/// The router as a hyper service that marks when a request head has arrived and when its
/// answer is ready.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Answering<<TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.enter(BUSY);
        Answering { inner: self.inner.call(req), activity: self.activity.clone() }
    }
}

struct Answering<F> {
    inner: F,
    activity: Arc<Activity>,
}

impl<F: Future + Unpin> Future for Answering<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let ready = Pin::new(&mut self.inner).poll(cx);
        if ready.is_ready() {
            self.activity.enter(IDLE);
        }
        ready
    }
}

/// The connection's socket, noting the first byte of each request and progress in writing
/// responses.
struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl WatchedIo {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) && self.activity.phase() == IDLE {
            self.activity.enter(IDLE);
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && this.activity.phase() == IDLE {
            this.activity.enter(HEAD);
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1024)), 1024 - RESERVED_FDS as usize);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(1024, Some(10)), 1);
        assert_eq!(connection_cap(0, None), 1);
    }

    #[test]
    fn the_open_file_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn each_phase_has_its_own_deadline() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            chat_timeout: Duration::ZERO,
            max_connections: 1,
            grace: Duration::from_secs(1),
        };
        let a = Activity::new(Instant::now());
        let started = Instant::now();
        let within = |phase: u64, allowed: u64| {
            let (p, deadline) = a.deadline(&limits);
            assert_eq!(p, phase);
            let left = deadline.saturating_duration_since(started).as_secs_f64();
            assert!((left - allowed as f64).abs() < 0.5, "{phase}: {left} s left, not {allowed}");
        };
        within(HEAD, 10);
        a.enter(BUSY);
        within(BUSY, 15);
        a.enter(IDLE);
        within(IDLE, 60);
        a.enter(HEAD);
        within(HEAD, 10);
    }
}
