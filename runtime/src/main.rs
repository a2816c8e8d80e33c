//! `lore`, the runtime: serve an artifact over stdin (JSON lines) and HTTP, or ask it once.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use runtime::config::Config;
use runtime::registry::{OpenOptions, Registry};
use runtime::service::Service;

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
    /// Where artifacts named by URL (`https://HOST/PATH#sha256=HEX`) are kept, by digest
    /// (default: $XDG_CACHE_HOME/lore or ~/.cache/lore).
    #[arg(long, global = true, env = "LORE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Allow plain http to hosts other than loopback when fetching an artifact.
    #[arg(long, global = true, env = "LORE_REGISTRY_INSECURE")]
    insecure: bool,
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
        /// One artifact, served as the default knowledge base (or use --config).
        #[arg(env = "LORE_ARTIFACT", required_unless_present = "config", conflicts_with = "config")]
        artifact: Option<PathBuf>,
        /// A TOML file naming several knowledge bases and their variants (see README).
        #[arg(long, env = "LORE_CONFIG")]
        config: Option<PathBuf>,
        /// The name of the knowledge base ARTIFACT is served as.
        #[arg(long, env = "LORE_KB_NAME", default_value = runtime::config::DEFAULT_NAME)]
        kb_name: String,
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
        /// How often, in milliseconds, to look for artifact files replaced by rename and swap
        /// them in; 0 turns the watcher off (SIGHUP and POST /admin/reload still reload).
        #[arg(long, env = "LORE_WATCH_MS", default_value_t = 250)]
        watch_ms: u64,
        /// A file holding the bearer token of the admin endpoints (LORE_ADMIN_TOKEN gives it
        /// directly); without one the admin endpoints are off.
        #[arg(long, env = "LORE_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        #[command(flatten)]
        limits: HttpLimits,
        #[command(flatten)]
        chat: Box<ChatArgs>,
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

/// How chat answers are made and remembered (`/v1/chat`, `/v1/chat/completions`).
#[derive(clap::Args, Debug)]
struct ChatArgs {
    /// The chat model of an OpenAI-compatible API; without one, answers are extractive.
    #[arg(long, env = "LORE_LLM_MODEL")]
    llm_model: Option<String>,
    /// The OpenAI-compatible API (OpenAI, Ollama, vLLM, llama.cpp's server); the key is read
    /// from OPENAI_API_KEY only, never from a flag.
    #[arg(long, env = "OPENAI_BASE_URL", default_value = "https://api.openai.com/v1")]
    openai_base_url: String,
    /// Seconds one LLM answer may take, retries included; then the answer is extractive.
    #[arg(long, env = "LORE_LLM_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    llm_timeout_secs: u64,
    /// Retries of an LLM call answered 429 or 5xx (before any text was streamed).
    #[arg(long, env = "LORE_LLM_RETRIES", default_value_t = 3)]
    llm_retries: u32,
    /// Longest LLM answer, in tokens.
    #[arg(long, env = "LORE_LLM_MAX_TOKENS", default_value_t = 600)]
    llm_max_tokens: u32,
    /// Chat messages answered at once; one more gets 503 (each may hold a thread for up to
    /// the LLM's deadline).
    #[arg(long, env = "LORE_CHAT_CONCURRENCY", default_value_t = runtime::service::DEFAULT_CHAT_CONCURRENCY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    chat_concurrency: usize,
    /// Chat answers kept in the response cache (keyed by artifact build, question and
    /// conversation); 0 turns it off.
    #[arg(long, env = "LORE_CHAT_CACHE_ENTRIES", default_value_t = 1024)]
    chat_cache_entries: usize,
    /// Conversation memory: an SQLite file (created if missing), `:memory:` for memory that
    /// ends with the process, or a `postgres://USER:PASSWORD@HOST/DB` URL shared by replicas.
    #[arg(long, env = "LORE_MEMORY", default_value = ":memory:", hide_env_values = true)]
    memory: PathBuf,
    /// A file holding the base64 memory key (LORE_MEMORY_KEY gives it directly). Without one,
    /// a memory file is sealed with a key derived from the artifact key.
    #[arg(long, env = "LORE_MEMORY_KEY_FILE")]
    memory_key_file: Option<PathBuf>,
    /// Turns kept verbatim per conversation; older ones are folded into a summary.
    #[arg(long, env = "LORE_MEMORY_MAX_TURNS", default_value_t = 40, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    memory_max_turns: usize,
    /// Seconds a conversation is kept after its last message.
    #[arg(long, env = "LORE_MEMORY_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    memory_ttl_secs: u64,
    /// Sealed bytes kept over all conversations; the least recently used go first.
    #[arg(long, env = "LORE_MEMORY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    memory_max_bytes: u64,
}

/// The chat layer and its memory, from the flags. The memory key: LORE_MEMORY_KEY or
/// --memory-key-file; else one derived from the artifact key; else, for `:memory:` only, a
/// random one (a file sealed with a key nobody has would be lost at the next start).
fn chat_layer(args: &ChatArgs, open: &OpenArgs) -> Result<(runtime::chat::Chat, runtime::chat::memory::Memory)> {
    use runtime::chat::llm::{Llm, LlmConfig};
    let llm = args.llm_model.as_ref().filter(|m| !m.trim().is_empty()).map(|model| {
        Llm::new(LlmConfig {
            base_url: args.openai_base_url.clone(),
            api_key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.trim().is_empty()),
            model: model.clone(),
            deadline: Duration::from_secs(args.llm_timeout_secs),
            max_retries: args.llm_retries,
            temperature: 0.3,
            max_tokens: args.llm_max_tokens,
        })
    });
    let memory_key = std::env::var("LORE_MEMORY_KEY").ok();
    let loaded = format::seal::load_key(memory_key.as_deref(), args.memory_key_file.as_deref())
        .map_err(|e| anyhow::anyhow!("{}", e.replace("LORE_KEY", "LORE_MEMORY_KEY")))?;
    if let Some(warning) = loaded.as_ref().and_then(|k| k.warning.as_ref()) {
        tracing::warn!("{warning}");
    }
    let in_process = args.memory.as_os_str() == ":memory:";
    let master: [u8; 32] = match loaded {
        Some(k) => k.key.derive("conversation memory"),
        None => match format::seal::load_key(open.key.as_deref(), open.key_file.as_deref()).ok().flatten() {
            Some(k) => k.key.derive("conversation memory"),
            None if in_process => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the random source failed: {e}"))?;
                bytes
            }
            None => anyhow::bail!(
                "LORE_MEMORY names a file but no key seals it: give LORE_MEMORY_KEY or LORE_MEMORY_KEY_FILE (base64, 32 bytes; `lorec keygen` makes one)"
            ),
        },
    };
    let limits = runtime::chat::memory::Limits {
        max_turns: args.memory_max_turns,
        ttl: Duration::from_secs(args.memory_ttl_secs),
        max_bytes: args.memory_max_bytes,
    };
    let memory = runtime::chat::memory::Memory::open(&args.memory, &master, limits)?;
    tracing::info!(
        llm = args.llm_model.as_deref().unwrap_or("none (extractive answers)"),
        memory = %memory.location().display(),
        "chat"
    );
    Ok((runtime::chat::Chat::new(llm, args.chat_cache_entries), memory))
}

/// Open the registry; a URL artifact that is bad input (no digest, a digest that does not
/// match, a tag or digest the registry does not have) exits 2 like other rejected input.
fn open_registry(config: &Config, options: OpenOptions, metrics: Arc<runtime::metrics::Metrics>) -> Result<Registry> {
    Registry::open(config, options, metrics).map_err(|e| match e {
        runtime::registry::RegistryError::Fetch { ref error, .. } if error.is_bad_input() => anyhow::Error::new(
            Rejected(runtime::api::ApiError::new(runtime::api::ErrorCode::BadRequest, e.to_string())),
        ),
        other => anyhow::Error::new(other),
    })
}

/// `lore serve --http` connection limits (see `runtime::listener`).
#[derive(clap::Args, Debug)]
struct HttpLimits {
    /// Seconds a client has to send a whole request head (request line and headers), counted
    /// from the accept or from the first byte of the next request; then the connection is closed.
    #[arg(long, env = "LORE_HEADER_READ_TIMEOUT_SECS", default_value_t = runtime::server::listener::DEFAULT_HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// Seconds a kept-alive HTTP connection may wait for its next request (or a response for
    /// the client to take its bytes) before it is closed.
    #[arg(long, env = "LORE_IDLE_TIMEOUT_SECS", default_value_t = runtime::server::listener::DEFAULT_IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// HTTP connections served at once (lowered to leave 64 file descriptors under the
    /// open-file limit); one more is answered 503 and closed.
    #[arg(long, env = "LORE_MAX_CONNECTIONS", default_value_t = runtime::server::listener::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
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
            // Input rejected (exit 2): a request the service refused as the client's fault, or an
            // artifact, key or configuration that cannot be served. Anything else exits 1.
            let rejected = e.chain().any(|c| {
                c.downcast_ref::<Rejected>().is_some()
                    || c.downcast_ref::<runtime::registry::RegistryError>().is_some_and(|e| {
                        matches!(
                            e,
                            runtime::registry::RegistryError::Open { .. } | runtime::registry::RegistryError::Config(_)
                        )
                    })
                    || c.downcast_ref::<runtime::config::ConfigError>().is_some()
            });
            ExitCode::from(if rejected { 2 } else { 1 })
        }
    }
}

fn init_logging(format: LogFormat) {
    format::logging::init(matches!(format, LogFormat::Json));
}

fn open_options(cli: &OpenArgs) -> Result<OpenOptions> {
    Ok(OpenOptions {
        load: match cli.load {
            LoadArg::Map => runtime::LoadMode::Map,
            LoadArg::Copy => runtime::LoadMode::Copy,
        },
        require_sealed: cli.require_sealed,
        params: runtime::engine::retrieval::params_from_env().map_err(anyhow::Error::msg)?,
        key_base64: cli.key.clone(),
        key_file: cli.key_file.clone(),
        cache_dir: cli.cache_dir.clone(),
        insecure: cli.insecure,
    })
}

/// The admin token: `LORE_ADMIN_TOKEN`, else the file `--admin-token-file` names.
fn admin_token(file: Option<&std::path::Path>) -> Result<Option<Arc<str>>> {
    let token = match (std::env::var("LORE_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty()), file) {
        (Some(t), _) => t,
        (None, Some(path)) => {
            let bytes = format::fsio::read_regular(path, format::fsio::MAX_KEY_FILE_BYTES)?;
            String::from_utf8(bytes).with_context(|| format!("{}: the admin token is not text", path.display()))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    anyhow::ensure!(
        token.len() >= 16,
        "the admin token is {} bytes; use at least 16 (e.g. `openssl rand -hex 32`)",
        token.len()
    );
    Ok(Some(Arc::from(token)))
}

/// Write to stderr, ignoring failure: with stderr closed there is no one left to tell, and
/// `eprint!` would panic.
fn to_stderr(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// An error the service mapped to a client error exits 2 ("input rejected"); anything else 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Rejected(runtime::api::ApiError);

fn run(cli: Cli) -> Result<()> {
    let options = open_options(&cli.open)?;
    match cli.command {
        Command::Query { artifact, question, json, k } => {
            let config = Config::single(artifact, runtime::config::DEFAULT_NAME);
            let service = Service::new(open_registry(&config, options, Arc::default())?, Arc::default());
            let req = runtime::QueryRequest { k: Some(k), ..runtime::QueryRequest::question(question) };
            let answer = service.answer_blocking(req, Default::default(), "query").map_err(|e| {
                if e.code.is_client_error() || e.code == runtime::api::ErrorCode::ArtifactDamaged {
                    anyhow::Error::new(Rejected(e))
                } else {
                    anyhow::Error::new(e)
                }
            })?;
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
        Command::Serve {
            artifact,
            config,
            kb_name,
            http,
            stdin,
            grace_secs,
            request_timeout_secs,
            watch_ms,
            admin_token_file,
            limits,
            chat,
        } => {
            let config = match (config, artifact) {
                (Some(file), _) => Config::from_file(&file)?,
                (None, Some(artifact)) => Config::single(artifact, &kb_name),
                (None, None) => anyhow::bail!("give an ARTIFACT or --config FILE"),
            };
            let admin_token = admin_token(admin_token_file.as_deref())?;
            // An answer, and a summary when a long conversation is folded, each within the
            // LLM's deadline, and a margin for retrieval and memory.
            let chat_timeout = if chat.llm_model.as_deref().is_some_and(|m| !m.trim().is_empty()) {
                Duration::from_secs(chat.llm_timeout_secs.saturating_mul(2).saturating_add(5))
            } else {
                Duration::ZERO
            };
            let chat_concurrency = chat.chat_concurrency;
            let (chat, memory) = chat_layer(&chat, &cli.open).map_err(|e| {
                anyhow::Error::new(Rejected(runtime::api::ApiError::new(
                    runtime::api::ErrorCode::BadRequest,
                    format!("{e:#}"),
                )))
            })?;
            let started = std::time::Instant::now();
            let metrics = Arc::new(runtime::metrics::Metrics::default());
            let registry = open_registry(&config, options, metrics.clone())?;
            let variants: usize = registry.kbs().iter().map(|k| k.variants.len()).sum();
            tracing::info!(
                kbs = registry.kbs().len(),
                variants,
                open_us = started.elapsed().as_micros() as u64,
                "ready"
            );
            let service = Arc::new(
                Service::new(registry, metrics).with_chat(chat, Some(memory)).with_chat_concurrency(chat_concurrency),
            );
            let nofile = runtime::server::listener::open_file_limit();
            let max_connections = runtime::server::listener::connection_cap(limits.max_connections, nofile);
            if http.is_some() && max_connections < limits.max_connections {
                tracing::warn!(
                    asked = limits.max_connections,
                    max_connections,
                    open_file_limit = nofile,
                    "--max-connections lowered to fit the open-file limit (raise it with `ulimit -n`)"
                );
            }
            let limits = runtime::server::listener::Limits {
                header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
                request_timeout: Duration::from_secs(request_timeout_secs),
                chat_timeout,
                max_connections,
                grace: Duration::from_secs(grace_secs),
            };
            if http.is_some() {
                tracing::info!(
                    header_read_timeout_secs = limits.header_read_timeout.as_secs(),
                    idle_timeout_secs = limits.idle_timeout.as_secs(),
                    request_timeout_secs,
                    max_connections,
                    "http limits"
                );
            }
            let options = runtime::server::ServeOptions {
                http,
                stdin,
                limits,
                watch: (watch_ms > 0).then(|| Duration::from_millis(watch_ms)),
                admin_token,
            };
            runtime::server::run(service, options).context("serving")
        }
    }
}
