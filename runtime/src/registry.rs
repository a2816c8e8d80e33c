//! Knowledge bases by name, each with weighted variants, each variant an engine behind an
//! atomic pointer: a request takes the current engine with one atomic load and holds it to
//! the end; a swap opens and checks the new artifact first and only then replaces the pointer,
//! so no request ever sees a half-loaded engine or two artifacts. The previous engine of each
//! variant is kept for rollback; older ones are dropped when their last request ends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use format::seal::Key;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::api::{ApiError, Assignment, ErrorCode};
use crate::config::{Config, TOTAL_WEIGHT};
use crate::engine::mapped::{FileStamp, LoadMode};
use crate::engine::retrieval::Params;
use crate::engine::{Engine, EngineError};
use crate::metrics::{InfoLabels, LoadedMetrics, Metrics, RejectLabels, SwapLabels, VariantLabels};

/// How every artifact of this process is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub load: LoadMode,
    /// Refuse artifacts built with `--no-encrypt`.
    pub require_sealed: bool,
    /// Fusion parameters overriding the artifacts' (tuning runs only).
    pub params: Option<Params>,
    /// The process-wide key (`LORE_KEY`), for knowledge bases without their own key file.
    pub key_base64: Option<String>,
    /// The process-wide key file (`LORE_KEY_FILE`), re-read at every load so a rekeyed
    /// artifact can be swapped in with its new key.
    pub key_file: Option<PathBuf>,
    /// Where artifacts named by URL (`oci://`, `https://…#sha256=`) are fetched to; `None`:
    /// [`crate::fetch::default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Plain http to registries and hosts other than loopback.
    pub insecure: bool,
}

impl OpenOptions {
    /// The local file of a configured artifact: a path as it is; a URL fetched (or found in
    /// the cache) and verified against its digest, a tag resolved again.
    pub fn local_artifact(&self, configured: &Path) -> Result<PathBuf, crate::fetch::FetchError> {
        let text = configured.to_string_lossy();
        if !crate::fetch::is_url(&text) {
            return Ok(configured.to_path_buf());
        }
        let cache = self.cache_dir.clone().unwrap_or_else(crate::fetch::default_cache_dir);
        crate::fetch::resolve(&text, &cache, self.insecure)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("knowledge base \"{kb}\", variant \"{variant}\": {error}")]
    Open { kb: String, variant: String, error: EngineError },
    #[error("knowledge base \"{kb}\": {message}")]
    Key { kb: String, message: String },
    #[error("knowledge base \"{kb}\", variant \"{variant}\": {error}")]
    Fetch { kb: String, variant: String, error: Box<crate::fetch::FetchError> },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("the new configuration {0}; restart lore to apply it")]
    Structure(String),
}

/// Open one artifact as a swap or start-up would: every check `Engine::open_with` makes, and
/// `require_sealed`; the model of `reuse` is shared when it is the same.
pub fn open_engine(
    path: &Path,
    key: Option<&Key>,
    options: &OpenOptions,
    reuse: Option<&Engine>,
) -> Result<Engine, EngineError> {
    let engine = Engine::open_reusing(path, key, options.load, reuse)?.with_params(options.params);
    if matches!(engine.header().cipher, format::Cipher::None) {
        if options.require_sealed {
            return Err(EngineError::Unsealed { path: path.display().to_string() });
        }
        if key.is_some() {
            tracing::warn!(
                artifact = %path.display(),
                "the artifact is NOT sealed (built with --no-encrypt): anyone who can read the file can read its \
                 contents, and the key given is not used; pass --require-sealed (LORE_REQUIRE_SEALED=1) to refuse such artifacts"
            );
        } else {
            tracing::info!(artifact = %path.display(), "the artifact is not sealed (built with --no-encrypt)");
        }
    }
    Ok(engine)
}

/// Read a key the way `OpenOptions` and a knowledge base's `key_file` say, logging a warning
/// about a loosely protected key file.
fn read_key(options: &OpenOptions, kb_key_file: Option<&Path>) -> Result<Option<Key>, String> {
    let loaded = match kb_key_file {
        Some(file) => format::seal::load_key(None, Some(file))?,
        None => format::seal::load_key(options.key_base64.as_deref(), options.key_file.as_deref())?,
    };
    if let Some(warning) = loaded.as_ref().and_then(|k| k.warning.as_deref()) {
        tracing::warn!("{warning}");
    }
    Ok(loaded.map(|k| k.key))
}

/// One artifact, opened and serving (or kept for rollback).
#[derive(Debug)]
pub struct Loaded {
    pub engine: Engine,
    pub kb: String,
    pub variant: String,
    pub path: PathBuf,
    pub stamp: FileStamp,
    /// SHA-256 of the header, hex: names the exact build.
    pub digest: String,
    pub loaded_unix_ms: u64,
    pub open_us: u64,
    pub metrics: LoadedMetrics,
}

impl Loaded {
    fn info_labels(&self) -> InfoLabels {
        let h = self.engine.header();
        InfoLabels {
            kb: self.kb.clone(),
            variant: self.variant.clone(),
            version: h.artifact_version.clone(),
            build_id: h.build_id.clone(),
            digest: self.digest.clone(),
        }
    }

    /// What an operator needs to tell artifacts apart.
    pub fn summary(&self) -> serde_json::Value {
        let h = self.engine.header();
        json!({
            "version": h.artifact_version,
            "build_id": h.build_id,
            "digest": self.digest,
            "path": self.path.display().to_string(),
            "loaded_unix_ms": self.loaded_unix_ms,
            "open_us": self.open_us,
            "chunks": h.counts.chunks,
            "sealed": !matches!(h.cipher, format::Cipher::None),
        })
    }
}

/// One variant of a knowledge base.
#[derive(Debug)]
pub struct Variant {
    pub name: String,
    path: ArcSwap<PathBuf>,
    current: ArcSwap<Loaded>,
    previous: Mutex<Option<Arc<Loaded>>>,
    /// The file last offered at the path (loaded or rejected): the watcher acts only when the
    /// path names something else, so a rejected file is not retried in a loop and a rollback
    /// is not undone by the watcher.
    seen: Mutex<Option<FileStamp>>,
    /// Serialises loads of this variant.
    loading: Mutex<()>,
}

impl Variant {
    /// The engine serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }
}

/// One knowledge base: its variants and their weights.
#[derive(Debug)]
pub struct Kb {
    pub name: String,
    key_file: ArcSwapOption<PathBuf>,
    pub variants: Vec<Variant>,
    /// Percent per variant, in `variants` order; add up to [`TOTAL_WEIGHT`].
    weights: ArcSwap<Vec<u32>>,
}

impl Kb {
    pub fn weights(&self) -> Arc<Vec<u32>> {
        self.weights.load_full()
    }

    fn variant_names(&self) -> Vec<String> {
        self.variants.iter().map(|v| v.name.clone()).collect()
    }

    /// The variant for `user`: a fixed hash of the knowledge base's name and the user's, mapped
    /// onto the cumulative weights. The same user lands on the same variant across requests,
    /// restarts and reloads while the weights stay the same.
    pub fn variant_for_user(&self, user: &str) -> usize {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([0]);
        h.update(user.as_bytes());
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        self.variant_at(u64::from_le_bytes(first))
    }

    /// The variant at point `x` of the whole `u64` range split by weight.
    fn variant_at(&self, x: u64) -> usize {
        let weights = self.weights.load();
        let point = ((u128::from(x) * u128::from(TOTAL_WEIGHT)) >> 64) as u32;
        let mut acc = 0;
        for (i, w) in weights.iter().enumerate() {
            acc += w;
            if point < acc {
                return i;
            }
        }
        // Unreachable while the weights add up to TOTAL_WEIGHT; the last weighted variant.
        weights.iter().rposition(|w| *w > 0).unwrap_or(0)
    }
}

/// Why a swap was refused, as a metric label.
fn reject_reason(e: &EngineError) -> &'static str {
    use format::ContainerError as C;
    match e {
        EngineError::Read(_) => "unreadable",
        EngineError::Container { error, .. } => match error {
            C::NotAnArtifact(_) => "not_an_artifact",
            C::TooNew { .. } => "too_new",
            C::TooOld { .. } => "too_old",
            C::Truncated(_) => "truncated",
            C::Corrupt(_) | C::Seal(_) => "corrupt",
            C::KeyRequired { .. } => "key_required",
            C::WrongKey { .. } => "wrong_key",
        },
        EngineError::Malformed { .. } => "corrupt",
        EngineError::Unsealed { .. } => "unsealed",
        EngineError::EmbedderMissing { .. } => "embedder_missing",
        EngineError::Embed(_) => "embedder",
        EngineError::ArtifactChanged { .. } => "changed",
    }
}

/// What set off a reload, as a metric label and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The artifact's path was found to name another file.
    Watch,
    /// `POST /admin/reload`.
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::Watch => "watch",
            Trigger::Admin => "admin",
        }
    }
}

/// What a reload did to one variant.
#[derive(Debug)]
pub enum Outcome {
    Unchanged,
    Swapped { from: Arc<Loaded>, to: Arc<Loaded> },
    Rejected { reason: &'static str, message: String },
}

/// What a reload did to each variant.
#[derive(Debug)]
pub struct Report {
    pub kb: String,
    pub variant: String,
    pub outcome: Outcome,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({"kb": self.kb, "variant": self.variant});
        match &self.outcome {
            Outcome::Unchanged => v["outcome"] = "unchanged".into(),
            Outcome::Swapped { from, to } => {
                v["outcome"] = "swapped".into();
                v["from"] = from.summary();
                v["to"] = to.summary();
            }
            Outcome::Rejected { reason, message } => {
                v["outcome"] = "rejected".into();
                v["reason"] = (*reason).into();
                v["message"] = message.clone().into();
            }
        }
        v
    }
}

/// Every knowledge base of the process.
#[derive(Debug)]
pub struct Registry {
    kbs: Vec<Kb>,
    default: ArcSwapOption<String>,
    options: OpenOptions,
    metrics: Arc<Metrics>,
    config_file: Option<PathBuf>,
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave its value half-changed (each is a
    // plain replace), so a poisoned lock is still good.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Open every artifact `config` names (in parallel); any failure is an error naming the
    /// entry, and nothing is served.
    pub fn open(config: &Config, options: OpenOptions, metrics: Arc<Metrics>) -> Result<Registry, RegistryError> {
        let mut kbs = Vec::with_capacity(config.kbs.len());
        for kb in &config.kbs {
            let key = read_key(&options, kb.key_file.as_deref())
                .map_err(|message| RegistryError::Key { kb: kb.name.clone(), message })?;
            // The first variant opens alone; the others open in parallel, sharing its model
            // when theirs is the same (A/B variants usually differ in content, not embedder).
            let open_one = |v: &crate::config::VariantConfig, reuse: Option<&Engine>| {
                let local = options.local_artifact(&v.artifact).map_err(|error| RegistryError::Fetch {
                    kb: kb.name.clone(),
                    variant: v.name.clone(),
                    error: Box::new(error),
                })?;
                load(&kb.name, &v.name, &local, key.as_ref(), &options, &metrics, reuse)
                    .map_err(|error| RegistryError::Open { kb: kb.name.clone(), variant: v.name.clone(), error })
            };
            let first = open_one(&kb.variants[0], None)?;
            // Threads of their own, not rayon's pool: an open may download its artifact and
            // waits on the disk, and the pool stays free for the decrypting and hashing it does.
            let rest: Vec<Result<Loaded, RegistryError>> = std::thread::scope(|scope| {
                let handles: Vec<_> =
                    kb.variants[1..].iter().map(|v| scope.spawn(|| open_one(v, Some(&first.engine)))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
            });
            let opened = std::iter::once(Ok(first)).chain(rest);
            let mut variants = Vec::with_capacity(kb.variants.len());
            for (v, loaded) in kb.variants.iter().zip(opened) {
                let loaded = Arc::new(loaded?);
                metrics.artifact_info.get_or_create(&loaded.info_labels()).set(1);
                metrics
                    .weights
                    .get_or_create(&VariantLabels { kb: kb.name.clone(), variant: v.name.clone() })
                    .set(i64::from(v.weight));
                variants.push(Variant {
                    name: v.name.clone(),
                    path: ArcSwap::from_pointee(v.artifact.clone()),
                    seen: Mutex::new(Some(loaded.stamp)),
                    current: ArcSwap::new(loaded),
                    previous: Mutex::new(None),
                    loading: Mutex::new(()),
                });
            }
            kbs.push(Kb {
                name: kb.name.clone(),
                key_file: ArcSwapOption::from_pointee(kb.key_file.clone()),
                weights: ArcSwap::from_pointee(kb.variants.iter().map(|v| v.weight).collect()),
                variants,
            });
        }
        Ok(Registry {
            kbs,
            default: ArcSwapOption::from_pointee(config.default.clone()),
            options,
            metrics,
            config_file: config.file.clone(),
        })
    }

    pub fn kbs(&self) -> &[Kb] {
        &self.kbs
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn kb_names(&self) -> Vec<String> {
        self.kbs.iter().map(|k| k.name.clone()).collect()
    }

    pub fn kb(&self, name: Option<&str>) -> Result<&Kb, ApiError> {
        let default = self.default.load();
        let Some(name) = name.or(default.as_deref().map(String::as_str)) else {
            return Err(ApiError::new(
                ErrorCode::NoDefaultKb,
                "this server has several knowledge bases and no default: ask /v1/kb/NAME/query or name `kb`",
            )
            .with_available(self.kb_names()));
        };
        self.kbs.iter().find(|k| k.name == name).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownKb, format!("no knowledge base is named \"{name}\""))
                .with_available(self.kb_names())
        })
    }

    /// Choose the engine for one request: the knowledge base named (or the default), then the
    /// forced variant, else the user's sticky variant, else a weighted random draw.
    pub fn pick(
        &self,
        kb: Option<&str>,
        variant: Option<&str>,
        user: Option<&str>,
    ) -> Result<(Arc<Loaded>, Assignment), ApiError> {
        let kb = self.kb(kb)?;
        let (index, assignment) = if let Some(name) = variant {
            let i = kb.variants.iter().position(|v| v.name == name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownVariant,
                    format!("knowledge base \"{}\" has no variant \"{name}\"", kb.name),
                )
                .with_available(kb.variant_names())
            })?;
            (i, Assignment::Forced)
        } else if kb.variants.len() == 1 {
            (0, Assignment::Only)
        } else if let Some(user) = user {
            (kb.variant_for_user(user), Assignment::User)
        } else {
            (kb.variant_at(random_u64()), Assignment::Random)
        };
        Ok((kb.variants[index].current(), assignment))
    }

    /// Load every variant whose path names another file than it last saw (`force`: than the
    /// one serving, retrying files rejected before). The old engine serves until the new one
    /// is open and checked; a file that fails is rejected, logged and counted.
    pub fn reload(&self, trigger: Trigger, force: bool) -> Vec<Report> {
        let mut reports = Vec::new();
        for kb in &self.kbs {
            for v in &kb.variants {
                let outcome = self.reload_variant(kb, v, trigger, force);
                reports.push(Report { kb: kb.name.clone(), variant: v.name.clone(), outcome });
            }
        }
        reports
    }

    fn reload_variant(&self, kb: &Kb, v: &Variant, trigger: Trigger, force: bool) -> Outcome {
        let _loading = lock(&v.loading);
        let started = Instant::now();
        let configured = v.path.load_full();
        let labels = || (kb.name.clone(), v.name.clone());
        let reject = |reason: &'static str, message: String| {
            let (kb_name, variant) = labels();
            tracing::error!(kb = %kb_name, variant = %variant, trigger = trigger.as_str(), reason, "swap rejected, the old artifact keeps serving: {message}");
            self.metrics
                .swaps_rejected
                .get_or_create(&RejectLabels { kb: kb_name, variant, reason: reason.into() })
                .inc();
            Outcome::Rejected { reason, message }
        };
        let path = if crate::fetch::is_url(&configured.to_string_lossy()) {
            // A URL is fetched again (a tag resolved again) only when asked: SIGHUP or
            // /admin/reload, never by the file watcher's polling.
            if !force {
                return Outcome::Unchanged;
            }
            match self.options.local_artifact(&configured) {
                Ok(local) => local,
                Err(e) => return reject("fetch", e.to_string()),
            }
        } else {
            configured.to_path_buf()
        };
        let stamp = match FileStamp::of_path(&path) {
            Ok(s) => s,
            Err(e) => {
                // A path briefly missing mid-deploy is not news to the watcher every tick.
                let mut seen = lock(&v.seen);
                if !force && seen.is_none() {
                    return Outcome::Unchanged;
                }
                *seen = None;
                return reject("unreadable", format!("{}: {e}", path.display()));
            }
        };
        {
            let mut seen = lock(&v.seen);
            if !force && *seen == Some(stamp) {
                return Outcome::Unchanged;
            }
            *seen = Some(stamp);
        }
        if v.current.load().stamp == stamp {
            return Outcome::Unchanged;
        }
        let key_file = kb.key_file.load_full();
        let key = match read_key(&self.options, key_file.as_deref().map(PathBuf::as_path)) {
            Ok(k) => k,
            Err(message) => return reject("key", message),
        };
        let current = v.current();
        let loaded =
            match load(&kb.name, &v.name, &path, key.as_ref(), &self.options, &self.metrics, Some(&current.engine)) {
                Ok(l) => Arc::new(l),
                Err(e) => return reject(reject_reason(&e), e.to_string()),
            };
        let to = loaded.clone();
        let from = self.install(v, loaded);
        self.metrics
            .swaps
            .get_or_create(&SwapLabels {
                kb: kb.name.clone(),
                variant: v.name.clone(),
                trigger: trigger.as_str().into(),
            })
            .inc();
        let h = to.engine.header();
        tracing::info!(
            kb = %kb.name, variant = %v.name, trigger = trigger.as_str(),
            from = %from.engine.header().build_id, to = %h.build_id, version = %h.artifact_version,
            swap_us = started.elapsed().as_micros() as u64, "artifact swapped in"
        );
        Outcome::Swapped { from, to }
    }

    /// Make `loaded` the current engine of `v`; the one it replaces becomes the previous
    /// (kept for rollback) and is returned.
    fn install(&self, v: &Variant, loaded: Arc<Loaded>) -> Arc<Loaded> {
        let labels = loaded.info_labels();
        let old = v.current.swap(loaded);
        self.metrics.artifact_info.remove(&old.info_labels());
        self.metrics.artifact_info.get_or_create(&labels).set(1);
        let displaced = lock(&v.previous).replace(old.clone());
        drop_off_the_request_path(displaced);
        old
    }

    /// Put back the previous engine of every variant matching `kb` and `variant` (all when
    /// `None`) that has one; the engine it replaces becomes the previous, so a second rollback
    /// undoes the first.
    pub fn rollback(&self, kb: Option<&str>, variant: Option<&str>) -> Result<Vec<serde_json::Value>, ApiError> {
        let kbs: Vec<&Kb> = match kb {
            Some(name) => vec![self.kb(Some(name))?],
            None => self.kbs.iter().collect(),
        };
        let mut done = Vec::new();
        for kb in kbs {
            if let Some(name) = variant
                && !kb.variants.iter().any(|v| v.name == name)
            {
                return Err(ApiError::new(
                    ErrorCode::UnknownVariant,
                    format!("knowledge base \"{}\" has no variant \"{name}\"", kb.name),
                )
                .with_available(kb.variant_names()));
            }
            for v in kb.variants.iter().filter(|v| variant.is_none_or(|n| n == v.name)) {
                let _loading = lock(&v.loading);
                let Some(previous) = lock(&v.previous).take() else { continue };
                let to = previous.clone();
                let from = self.install(v, previous);
                self.metrics
                    .rollbacks
                    .get_or_create(&VariantLabels { kb: kb.name.clone(), variant: v.name.clone() })
                    .inc();
                tracing::warn!(kb = %kb.name, variant = %v.name, from = %from.engine.header().build_id, to = %to.engine.header().build_id, "rolled back");
                done.push(json!({"kb": kb.name, "variant": v.name, "from": from.summary(), "to": to.summary()}));
            }
        }
        if done.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NothingToRollBack,
                "no variant has a previous artifact to roll back to",
            ));
        }
        Ok(done)
    }

    /// Re-read the configuration file (when serving one) and apply what may change without a
    /// restart: weights, artifact paths, key files, the default. Adding or removing knowledge
    /// bases or variants is refused, and then nothing changes.
    pub fn reread_config(&self) -> Result<bool, RegistryError> {
        let Some(file) = &self.config_file else { return Ok(false) };
        let config = Config::from_file(file)?;
        let same = config.kbs.len() == self.kbs.len()
            && config.kbs.iter().zip(&self.kbs).all(|(c, k)| {
                c.name == k.name
                    && c.variants.len() == k.variants.len()
                    && c.variants.iter().zip(&k.variants).all(|(cv, kv)| cv.name == kv.name)
            });
        if !same {
            return Err(RegistryError::Structure(
                "adds, removes, renames or reorders knowledge bases or variants".into(),
            ));
        }
        for (c, kb) in config.kbs.iter().zip(&self.kbs) {
            let weights: Vec<u32> = c.variants.iter().map(|v| v.weight).collect();
            if *kb.weights.load_full() != weights {
                tracing::info!(kb = %kb.name, ?weights, "weights changed");
                for (v, w) in kb.variants.iter().zip(&weights) {
                    self.metrics
                        .weights
                        .get_or_create(&VariantLabels { kb: kb.name.clone(), variant: v.name.clone() })
                        .set(i64::from(*w));
                }
                kb.weights.store(Arc::new(weights));
            }
            kb.key_file.store(c.key_file.clone().map(Arc::new));
            for (cv, v) in c.variants.iter().zip(&kb.variants) {
                if **v.path.load() != cv.artifact {
                    tracing::info!(kb = %kb.name, variant = %v.name, artifact = %cv.artifact.display(), "artifact path changed");
                    v.path.store(Arc::new(cv.artifact.clone()));
                }
            }
        }
        self.default.store(config.default.map(Arc::new));
        Ok(true)
    }

    /// Every knowledge base, variant, weight and artifact (current and previous).
    pub fn status(&self) -> serde_json::Value {
        let default = self.default.load();
        let kbs: Vec<serde_json::Value> = self
            .kbs
            .iter()
            .map(|kb| {
                let weights = kb.weights();
                let variants: Vec<serde_json::Value> = kb
                    .variants
                    .iter()
                    .zip(weights.iter())
                    .map(|(v, w)| {
                        json!({
                            "name": v.name,
                            "weight": w,
                            "artifact": v.current().summary(),
                            "previous": lock(&v.previous).as_ref().map(|p| p.summary()),
                        })
                    })
                    .collect();
                json!({"name": kb.name, "variants": variants})
            })
            .collect();
        json!({"default": default.as_deref(), "kbs": kbs})
    }

    /// Every current engine is still intact (readiness).
    pub fn check_intact(&self) -> Result<(), EngineError> {
        for kb in &self.kbs {
            for v in &kb.variants {
                v.current().engine.check_intact()?;
            }
        }
        Ok(())
    }
}

fn load(
    kb: &str,
    variant: &str,
    path: &Path,
    key: Option<&Key>,
    options: &OpenOptions,
    metrics: &Metrics,
    reuse: Option<&Engine>,
) -> Result<Loaded, EngineError> {
    let started = Instant::now();
    let engine = open_engine(path, key, options, reuse)?;
    let open_us = started.elapsed().as_micros() as u64;
    let h = engine.header();
    let digest = format::text::hex(&engine.header_digest());
    tracing::info!(
        kb, variant, artifact = %path.display(), version = %h.artifact_version, build_id = %h.build_id,
        chunks = h.counts.chunks, sealed = !matches!(h.cipher, format::Cipher::None), open_us, "artifact opened"
    );
    let metrics = LoadedMetrics::new(metrics, kb, variant, &h.artifact_version);
    Ok(Loaded {
        stamp: engine.file_stamp(),
        kb: kb.to_string(),
        variant: variant.to_string(),
        path: path.to_path_buf(),
        digest,
        loaded_unix_ms: now_unix_ms(),
        open_us,
        metrics,
        engine,
    })
}

/// Drop a replaced engine on a thread of its own, once no request holds it: unmapping a file
/// and freeing a decrypted index takes milliseconds (2.5 ms at seed-kb size), which would
/// otherwise be paid by the swap or by whichever request happened to hold it last, on an
/// async worker.
fn drop_off_the_request_path(loaded: Option<Arc<Loaded>>) {
    let Some(loaded) = loaded else { return };
    let spawned = std::thread::Builder::new().name("lore-drop".into()).spawn(move || {
        while Arc::strong_count(&loaded) > 1 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(loaded);
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to drop an old engine ({e}); it is dropped in place");
    }
}

/// A random `u64` for unnamed users: a per-thread xorshift seeded from the standard
/// library's random hasher keys; assignment needs spread, not secrecy.
fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher as _, Hasher as _};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_unix_ms());
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}
