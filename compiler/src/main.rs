//! `lorec`, the knowledge compiler: check, build, inspect and verify lore artifacts.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use compiler::build::{self, Audience, BuildOptions, VectorFormat};
use compiler::diag::render;
use compiler::embedder::Embedder;
use compiler::unit::UnitCache;
use format::seal::{Key, load_key};
use format::{Cipher, OpenedContainer};

/// Exit status for input that lorec rejects (invalid knowledge base, corrupt artifact).
const EXIT_REJECTED: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "lorec", version, about = "Compile a YAML knowledge base into a sealed lore artifact")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, env = "LORE_LOG_FORMAT", default_value = "pretty")]
    log_format: LogFormat,
    /// Colour diagnostics: auto, always or never.
    #[arg(long, global = true, env = "LORE_COLOR", default_value = "auto")]
    color: Color,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Deny {
    Warnings,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VectorsArg {
    Int8,
    F32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AudienceArg {
    Public,
    Internal,
}

#[derive(clap::Args, Debug)]
struct KeyArgs {
    /// The 32-byte key, base64 (as printed by `lorec keygen`).
    #[arg(long = "key", env = "LORE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A file holding the base64 key.
    #[arg(long = "key-file", env = "LORE_KEY_FILE")]
    key_file: Option<PathBuf>,
}

impl KeyArgs {
    fn load(&self) -> Result<Option<Key>> {
        load_key(self.key.as_deref(), self.key_file.as_deref()).map_err(anyhow::Error::msg)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a knowledge base and report every problem; writes nothing.
    Check {
        dir: PathBuf,
        /// Treat warnings as errors.
        #[arg(long, env = "LORE_DENY")]
        deny: Option<Deny>,
    },
    /// Compile a knowledge base into an artifact.
    Build {
        dir: PathBuf,
        /// Where to write the artifact.
        #[arg(short, long, env = "LORE_OUTPUT")]
        output: PathBuf,
        /// Treat warnings as errors.
        #[arg(long, env = "LORE_DENY")]
        deny: Option<Deny>,
        /// `public` leaves internal and private entities out entirely.
        #[arg(long, env = "LORE_AUDIENCE", default_value = "public")]
        audience: AudienceArg,
        /// How chunk vectors are stored: int8 (a quarter of the size) or f32.
        #[arg(long, env = "LORE_VECTORS", default_value = "int8")]
        vectors: VectorsArg,
        /// Fusion profile: auto (documents for JSON Lines / Markdown collections, else persona),
        /// persona or documents.
        #[arg(long, env = "LORE_RETRIEVAL", default_value = "auto")]
        retrieval: String,
        /// Your version label for this artifact (semver, build number, ...).
        #[arg(long, env = "LORE_ARTIFACT_VERSION", default_value = "0.0.0")]
        artifact_version: String,
        /// What embeds the chunks: potion (Model2Vec, the default), minilm, or openai:MODEL.
        #[arg(long, env = "LORE_EMBEDDER", default_value = "potion")]
        embedder: String,
        /// The model directory for potion (any Model2Vec model) or minilm (any BERT-family
        /// sentence-transformers model); defaults to the one `cargo xtask fetch-model` fetches.
        #[arg(long, env = "LORE_MODEL")]
        model: Option<PathBuf>,
        /// Write an unencrypted artifact (marked as such in its header).
        #[arg(long, env = "LORE_NO_ENCRYPT")]
        no_encrypt: bool,
        /// Where unchanged files' chunks and embeddings are kept between builds.
        #[arg(long, env = "LORE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Rebuild everything, ignoring and not writing the cache.
        #[arg(long, env = "LORE_NO_CACHE")]
        no_cache: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Show an artifact's header, sections, counts and hashes.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, env = "LORE_JSON")]
        json: bool,
    },
    /// Check every byte of an artifact; with the key, also decrypt and validate every section.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print a new random key (base64) on stdout.
    Keygen,
}

/// An error that means "the input was rejected", exiting with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Rejected(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if reader_went_away(&e) {
                // `lorec inspect | head`: the reader has what it wanted.
                ExitCode::SUCCESS
            } else if e.downcast_ref::<Rejected>().is_some() {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_REJECTED)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
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

fn run(cli: Cli) -> Result<()> {
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    match cli.command {
        Command::Check { dir, deny } => {
            let checked = build::check(&dir, None);
            report(&checked, deny.is_some(), color)?;
            let chunks = checked.chunks_found();
            tracing::info!(
                files = checked.sources.len(),
                chunks,
                warnings = checked.warnings(),
                "knowledge base is valid"
            );
            Ok(())
        }
        Command::Build {
            dir,
            output,
            deny,
            audience,
            retrieval,
            vectors,
            artifact_version,
            embedder,
            model,
            no_encrypt,
            cache_dir,
            no_cache,
            key,
        } => {
            let key = key.load()?;
            let fusion = match retrieval.as_str() {
                "auto" => None,
                name => Some(format::profiles::by_name(name).with_context(|| {
                    format!("unknown --retrieval profile `{name}`; use auto, persona or documents")
                })?),
            };
            if key.is_none() && !no_encrypt {
                bail!(
                    "no key: set LORE_KEY or LORE_KEY_FILE (make one with `lorec keygen`), or pass --no-encrypt for a plaintext artifact"
                );
            }
            if key.is_some() && no_encrypt {
                bail!("--no-encrypt and a key were both given; choose one");
            }
            let started = std::time::Instant::now();
            let model = model.unwrap_or_else(|| {
                let name = if embedder == "minilm" { "all-MiniLM-L6-v2" } else { "potion-base-8M" };
                PathBuf::from("artifacts/models").join(name)
            });
            let cache_dir = cache_dir.unwrap_or_else(|| default_cache_dir(&output));
            let vectors = match vectors {
                VectorsArg::Int8 => VectorFormat::I8,
                VectorsArg::F32 => VectorFormat::F32,
            };
            let embedder = Embedder::from_spec(
                &embedder,
                &model,
                vectors == VectorFormat::I8,
                (!no_cache).then_some(cache_dir.as_path()),
            )
            .context("cannot load the embedder")?;
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "embedder loaded");
            let audience = match audience {
                AudienceArg::Public => Audience::Public,
                AudienceArg::Internal => Audience::Internal,
            };
            let cache = (!no_cache).then(|| {
                UnitCache::new(&cache_dir, &embedder.fingerprint(), embedder.dims(), audience.as_str(), vectors)
            });
            let t = std::time::Instant::now();
            let checked = build::check(&dir, cache.as_ref());
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "check");
            report(&checked, deny.is_some(), color)?;
            let bar = progress_bar(checked.sources.len());
            let progress = |done: usize, _total: usize| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                }
            };
            let built = build::build(
                &checked,
                &BuildOptions {
                    audience,
                    fusion,
                    vectors,
                    artifact_version,
                    key: key.as_ref(),
                    embedder: &embedder,
                    cache: cache.as_ref(),
                    embedding_cache: (!no_cache).then_some(cache_dir.as_path()),
                    progress: Some(&progress),
                },
            )?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let t = std::time::Instant::now();
            compiler::atomic_write_with(&output, |file| built.container.write_to(key.as_ref(), file))
                .with_context(|| format!("cannot write {}", output.display()))?;
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "write");
            if let Some(cache) = &cache {
                cache.prune(UNIT_MAX_AGE);
            }
            tracing::info!(
                artifact = %output.display(),
                build_id = %built.container.header().build_id,
                chunks = built.chunks,
                files = checked.sources.len(),
                embedded_files = checked.files.len() - checked.cached_files(),
                cached_files = checked.cached_files(),
                embedding_cache_hits = built.embedding_cache_hits,
                bytes = built.container.file_len(),
                sealed = key.is_some(),
                ms = started.elapsed().as_millis() as u64,
                "artifact written"
            );
            Ok(())
        }
        Command::Inspect { file, json } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            let value = describe(&opened);
            if json {
                writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_text(&opened)?;
            }
            Ok(())
        }
        Command::Verify { file, key } => {
            let key = key.load()?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            let report = format::verify::verify(&opened, key.as_ref())
                .map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            if report.deep {
                writeln!(
                    std::io::stdout(),
                    "ok: {} — every byte matches, all sections decrypt and validate ({} text blocks)",
                    file.display(),
                    report.text_blocks
                )?;
            } else {
                writeln!(
                    std::io::stdout(),
                    "ok: {} — every byte matches its digest; give LORE_KEY to also decrypt and validate the sections",
                    file.display()
                )?;
            }
            Ok(())
        }
        Command::Keygen => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
            let key = Key::from_bytes(bytes);
            writeln!(std::io::stdout(), "{}", key.to_base64())?;
            eprintln!("key id {} — keep the key secret; artifacts record only its id", key.id());
            Ok(())
        }
    }
}

/// Whether an error is stdout's reader closing the pipe.
fn reader_went_away(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Cached units unused for this long are removed after a build: long enough for a knowledge
/// base built for two audiences, or rebuilt weekly, to keep all of its own.
const UNIT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

fn default_cache_dir(output: &Path) -> PathBuf {
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parent.join(".lorec-cache")
}

fn progress_bar(len: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || len < 2 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files").ok()?.progress_chars("=> "),
    );
    bar.set_prefix("embedding");
    Some(bar)
}

/// Print diagnostics; fail (exit 2) when there are errors, or warnings under `--deny warnings`.
fn report(checked: &build::Checked, deny_warnings: bool, color: bool) -> Result<()> {
    if !checked.diagnostics.is_empty() {
        eprint!("{}", render(&checked.diagnostics, &checked.map, color));
    }
    let (errors, warnings) = (checked.errors(), checked.warnings());
    if errors > 0 || (deny_warnings && warnings > 0) {
        let denied = if deny_warnings && warnings > 0 { " (warnings denied)" } else { "" };
        return Err(Rejected(format!(
            "knowledge base rejected: {errors} error(s), {warnings} warning(s){denied}; no artifact written"
        ))
        .into());
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(c: &OpenedContainer<'_>) -> serde_json::Value {
    let h = &c.header;
    let cipher = match h.cipher {
        Cipher::None => serde_json::json!({"name": "none"}),
        Cipher::Aes256Gcm { key_id, salt } => {
            serde_json::json!({"name": "aes-256-gcm", "key_id": hex(&key_id), "salt": hex(&salt), "kdf": "hkdf-sha256"})
        }
    };
    serde_json::json!({
        "format_version": c.format_version,
        "min_reader_version": c.min_reader_version,
        "file_bytes": c.file_len(),
        "header_sha256": hex(&c.header_digest),
        "artifact_version": h.artifact_version,
        "build_id": h.build_id,
        "created_unix": h.created_unix,
        "compiler": h.compiler,
        "audience": h.audience,
        "embedder": {"id": h.embedder.id, "dims": h.embedder.dims, "vocab_size": h.embedder.vocab_size, "weights_sha256": hex(&h.embedder.weights_sha256)},
        "cipher": cipher,
        "counts": {"chunks": h.counts.chunks, "terms": h.counts.terms, "text_blocks": h.counts.text_blocks, "sources": h.sources.len()},
        "sections": h.sections.iter().map(|s| serde_json::json!({
            "kind": s.kind.name(), "offset": s.offset, "stored_len": s.stored_len, "plain_len": s.plain_len,
            "plain_sha256": hex(&s.plain_sha256), "compression": format!("{:?}", s.compression).to_lowercase(), "encrypted": s.encrypted,
        })).collect::<Vec<_>>(),
        "sources": h.sources.iter().map(|s| serde_json::json!({"path": s.path, "sha256": hex(&s.sha256), "bytes": s.bytes})).collect::<Vec<_>>(),
    })
}

fn print_text(c: &OpenedContainer<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let h = &c.header;
    writeln!(
        out,
        "lore artifact, format v{} (readable by v{}+), {} bytes",
        c.format_version,
        c.min_reader_version,
        c.file_len()
    )?;
    writeln!(out, "  version     {}", h.artifact_version)?;
    writeln!(out, "  build id    {}", h.build_id)?;
    writeln!(out, "  created     {} (unix)", h.created_unix)?;
    writeln!(out, "  compiler    {}", h.compiler)?;
    writeln!(out, "  audience    {}", h.audience)?;
    writeln!(out, "  embedder    {} ({} dims, {} tokens)", h.embedder.id, h.embedder.dims, h.embedder.vocab_size)?;
    match h.cipher {
        Cipher::None => writeln!(out, "  cipher      none (built with --no-encrypt)")?,
        Cipher::Aes256Gcm { key_id, .. } => writeln!(out, "  cipher      aes-256-gcm, key id {}", hex(&key_id))?,
    }
    writeln!(
        out,
        "  counts      {} chunks, {} terms, {} text blocks, {} sources",
        h.counts.chunks,
        h.counts.terms,
        h.counts.text_blocks,
        h.sources.len()
    )?;
    writeln!(out, "  header      sha256 {}", hex(&c.header_digest))?;
    writeln!(out, "sections:")?;
    for s in &h.sections {
        writeln!(
            out,
            "  {:<6} @{:<9} {:>10} stored {:>10} plain  {:<4} {:<9} sha256 {}",
            s.kind.name(),
            s.offset,
            s.stored_len,
            s.plain_len,
            format!("{:?}", s.compression).to_lowercase(),
            if s.encrypted { "encrypted" } else { "plain" },
            hex(&s.plain_sha256)
        )?;
    }
    writeln!(out, "sources:")?;
    for s in &h.sources {
        writeln!(out, "  {}  {:>8} bytes  {}", hex(&s.sha256), s.bytes, s.path)?;
    }
    Ok(())
}
