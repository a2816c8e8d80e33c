//! `lore`, the runtime: serve an artifact over stdin (JSON lines) and HTTP, or ask it once.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use format::seal::load_key;
use runtime::Engine;
use runtime::http::{AppState, router, shutdown_signal};

#[derive(Parser, Debug)]
#[command(name = "lore", version, about = "Answer questions from a lore artifact")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, env = "LORE_LOG_FORMAT", default_value = "pretty")]
    log_format: LogFormat,
    #[command(flatten)]
    open: OpenArgs,
}

/// How artifacts are opened.
#[derive(clap::Args, Debug)]
struct OpenArgs {
    /// The artifact key, base64.
    #[arg(long, global = true, env = "LORE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A file holding the base64 key.
    #[arg(long, global = true, env = "LORE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Refuse artifacts built with `--no-encrypt`.
    #[arg(long, global = true, env = "LORE_REQUIRE_SEALED")]
    require_sealed: bool,
    /// How to hold the artifact: `map` (memory-map it; starts in milliseconds) or `copy` (read
    /// it into private memory, immune to the file being changed in place).
    #[arg(long, global = true, env = "LORE_LOAD", default_value = "map")]
    load: LoadArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LoadArg {
    Map,
    Copy,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve questions over HTTP and/or stdin JSON lines (stdin when no --http is given).
    Serve {
        #[arg(env = "LORE_ARTIFACT")]
        artifact: PathBuf,
        /// Listen for HTTP on this address, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, env = "LORE_HTTP")]
        http: Option<SocketAddr>,
        /// Also answer JSON lines on stdin (the default without --http).
        #[arg(long, env = "LORE_STDIN")]
        stdin: bool,
        /// Seconds to let in-flight requests finish after SIGTERM.
        #[arg(long, env = "LORE_GRACE_SECS", default_value_t = 10)]
        grace_secs: u64,
        /// Seconds one HTTP request may take.
        #[arg(long, env = "LORE_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
        request_timeout_secs: u64,
        #[command(flatten)]
        limits: HttpLimits,
    },
    /// Ask one question and print the answer.
    Query {
        #[arg(env = "LORE_ARTIFACT")]
        artifact: PathBuf,
        question: String,
        /// Print the full JSON answer.
        #[arg(long, env = "LORE_JSON")]
        json: bool,
        /// How many hits to return.
        #[arg(short, long, env = "LORE_K", default_value_t = runtime::DEFAULT_K)]
        k: usize,
    },
}

/// `lore serve --http` connection limits (see `runtime::listener`).
#[derive(clap::Args, Debug)]
struct HttpLimits {
    /// Seconds a client has to send a whole request head (request line and headers), counted
    /// from the accept or from the first byte of the next request; then the connection is closed.
    #[arg(long, env = "LORE_HEADER_READ_TIMEOUT_SECS", default_value_t = runtime::listener::DEFAULT_HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// Seconds a kept-alive HTTP connection may wait for its next request (or a response for
    /// the client to take its bytes) before it is closed.
    #[arg(long, env = "LORE_IDLE_TIMEOUT_SECS", default_value_t = runtime::listener::DEFAULT_IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// HTTP connections served at once (lowered to leave 64 file descriptors under the
    /// open-file limit); one more is answered 503 and closed.
    #[arg(long, env = "LORE_MAX_CONNECTIONS", default_value_t = runtime::listener::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            to_stderr(&format!("error: {e:#}\n"));
            let rejected = e.chain().any(|c| c.downcast_ref::<runtime::EngineError>().is_some());
            ExitCode::from(if rejected { 2 } else { 1 })
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LORE_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false);
    match format {
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn open(cli: &OpenArgs, artifact: &std::path::Path) -> Result<Engine> {
    let key = load_key(cli.key.as_deref(), cli.key_file.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(warning) = key.as_ref().and_then(|k| k.warning.as_deref()) {
        tracing::warn!("{warning}");
    }
    let params = runtime::retrieval::params_from_env().map_err(anyhow::Error::msg)?;
    let mode = match cli.load {
        LoadArg::Map => runtime::LoadMode::Map,
        LoadArg::Copy => runtime::LoadMode::Copy,
    };
    let engine = Engine::open_with(artifact, key.as_ref().map(|k| &k.key), mode)?.with_params(params);
    if matches!(engine.header().cipher, format::Cipher::None) {
        if cli.require_sealed {
            return Err(runtime::EngineError::Unsealed { path: artifact.display().to_string() }.into());
        }
        if key.is_some() {
            tracing::warn!(
                artifact = %artifact.display(),
                "the artifact is NOT sealed (built with --no-encrypt): anyone who can read the file can read its \
                 contents, and the key given is not used; pass --require-sealed (LORE_REQUIRE_SEALED=1) to refuse such artifacts"
            );
        } else {
            tracing::info!(artifact = %artifact.display(), "the artifact is not sealed (built with --no-encrypt)");
        }
    }
    Ok(engine)
}

/// Write to stderr, ignoring failure: with stderr closed there is no one left to tell, and
/// `eprint!` would panic.
fn to_stderr(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Query { artifact, question, json, k } => {
            let engine = open(&cli.open, &artifact)?;
            let req =
                runtime::QueryRequest { q: question, k: Some(k), include_off_topic: false, mode: Default::default() };
            let k = req.validate()?;
            let answer = engine.query(&req.q, k)?;
            let mut out = std::io::stdout().lock();
            use std::io::Write as _;
            if json {
                serde_json::to_writer_pretty(&mut out, &answer)?;
                writeln!(out)?;
            } else if !answer.on_topic {
                writeln!(
                    out,
                    "off topic: nothing in this knowledge base answers that (best similarity {:.3})",
                    answer.top_similarity
                )?;
            } else {
                for (i, hit) in answer.hits.iter().enumerate() {
                    writeln!(out, "{}. {} [{:.3}]  {}", i + 1, hit.title, hit.score, hit.id)?;
                    for line in hit.text.lines().skip(1).take(4) {
                        writeln!(out, "     {line}")?;
                    }
                }
            }
            Ok(())
        }
        Command::Serve { artifact, http, stdin, grace_secs, request_timeout_secs, limits } => {
            let started = std::time::Instant::now();
            let engine = Arc::new(open(&cli.open, &artifact)?);
            let h = engine.header();
            let sealed = !matches!(h.cipher, format::Cipher::None);
            tracing::info!(artifact = %artifact.display(), version = %h.artifact_version, build_id = %h.build_id, chunks = h.counts.chunks, sealed, open_us = started.elapsed().as_micros() as u64, "artifact opened");
            let Some(addr) = http else {
                let stdin = std::io::stdin().lock();
                return runtime::stdin::serve_lines(&engine, stdin, std::io::stdout().lock()).context("stdin loop");
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve_http(
                engine,
                addr,
                stdin,
                Duration::from_secs(grace_secs),
                Duration::from_secs(request_timeout_secs),
                limits,
            ))
        }
    }
}

async fn serve_http(
    engine: Arc<Engine>,
    addr: SocketAddr,
    stdin: bool,
    grace: Duration,
    timeout: Duration,
    limits: HttpLimits,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(url = %format!("http://{local}"), "listening");
    to_stderr(&format!("lore: listening on http://{local}\n"));
    if stdin {
        let engine = engine.clone();
        std::thread::spawn(move || {
            if let Err(e) = runtime::stdin::serve_lines(&engine, std::io::stdin().lock(), std::io::stdout().lock()) {
                tracing::warn!("stdin loop ended: {e}");
            }
        });
    }
    let nofile = runtime::listener::open_file_limit();
    let max_connections = runtime::listener::connection_cap(limits.max_connections, nofile);
    if max_connections < limits.max_connections {
        tracing::warn!(
            asked = limits.max_connections,
            max_connections,
            open_file_limit = nofile,
            "--max-connections lowered to fit the open-file limit (raise it with `ulimit -n`)"
        );
    }
    let limits = runtime::listener::Limits {
        header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        request_timeout: timeout,
        max_connections,
        grace,
    };
    tracing::info!(
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        request_timeout_secs = timeout.as_secs(),
        max_connections,
        "http limits"
    );
    let app = router(AppState { engine }, timeout);
    runtime::listener::serve(listener, app, limits, shutdown_signal()).await;
    Ok(())
}
