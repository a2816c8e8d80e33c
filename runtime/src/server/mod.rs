//! The servers around the [`Service`]: HTTP, stdin, the artifact watcher and the signals
//! (SIGHUP reloads, SIGTERM and Ctrl-C drain and stop), with the whole lifecycle in one place.

pub mod admin;
pub mod chat;
pub mod http;
pub mod listener;
pub mod page;
pub mod stdin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::registry::{Outcome, Report, Trigger};
use crate::service::{RequestIds, Service};

/// What `lore serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Listen for HTTP here.
    pub http: Option<SocketAddr>,
    /// Answer JSON lines on stdin (also when there is no HTTP address).
    pub stdin: bool,
    pub limits: listener::Limits,
    /// How often to look for replaced artifact files; `None` turns the watcher off.
    pub watch: Option<Duration>,
    /// The admin bearer token; the admin endpoints are off without one.
    pub admin_token: Option<Arc<str>>,
}

/// Write to stderr, ignoring failure: with stderr closed there is no one left to tell.
fn to_stderr(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Serve until stdin ends (stdin only) or a shutdown signal, then drain.
pub fn run(service: Arc<Service>, options: ServeOptions) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(service, options))
}

async fn serve(service: Arc<Service>, options: ServeOptions) -> std::io::Result<()> {
    if let Some(every) = options.watch {
        tokio::spawn(watch(service.clone(), every));
    }
    tokio::spawn(reload_on_sighup(service.clone()));
    let stdin_done = (options.stdin || options.http.is_none()).then(|| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let service = service.clone();
        std::thread::spawn(move || {
            let result = stdin::serve_lines(&service, std::io::stdin().lock(), std::io::stdout().lock());
            let _ = tx.send(result);
        });
        rx
    });
    let Some(addr) = options.http else {
        let Some(done) = stdin_done else { return Ok(()) };
        return tokio::select! {
            result = done => result.unwrap_or(Ok(())),
            () = shutdown_signal() => Ok(()),
        };
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("http://{local}"), admin = options.admin_token.is_some(), "listening");
    to_stderr(&format!("lore: listening on http://{local}\n"));
    let state = http::AppState { service, ids: Arc::new(RequestIds::default()), admin_token: options.admin_token };
    let app = http::router(state, options.limits.request_timeout);
    listener::serve(listener, app, options.limits, shutdown_signal()).await;
    Ok(())
}

fn log_reports(trigger: Trigger, reports: &[Report]) {
    let swapped = reports.iter().filter(|r| matches!(r.outcome, Outcome::Swapped { .. })).count();
    let rejected = reports.iter().filter(|r| matches!(r.outcome, Outcome::Rejected { .. })).count();
    if trigger != Trigger::Watch || swapped + rejected > 0 {
        tracing::info!(trigger = trigger.as_str(), swapped, rejected, "reload done");
    }
}

/// Look for replaced artifact files every `every`: one `stat` per variant, and a load only
/// when a path names another file than it last did.
async fn watch(service: Arc<Service>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(reports) = service.reload(Trigger::Watch, false).await {
            log_reports(Trigger::Watch, &reports);
        }
    }
}

/// SIGHUP: re-read the configuration and reload every artifact that changed.
async fn reload_on_sighup(service: Arc<Service>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload or by replacing files");
            return;
        };
        while hup.recv().await.is_some() {
            if let Ok(reports) = service.reload(Trigger::Signal, true).await {
                log_reports(Trigger::Signal, &reports);
            }
        }
    }
    #[cfg(not(unix))]
    drop(service);
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
