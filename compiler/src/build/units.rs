//! Compiling the files that changed: their admitted chunks embedded in batches (through the
//! embedding cache), then each file compiled into a [`Unit`] on all cores and stored in the
//! unit cache for the next build.

use rayon::prelude::*;

use crate::chunk::Chunk;
use crate::diag::Diagnostic;
use crate::embedder::{EmbedderError, EmbeddingCache};
use crate::sources::SourceFile;
use crate::unit::Unit;

use super::{BuildOptions, Checked, Compiled};

/// One changed file ready to compile: its source, every chunk found, the admitted ones and
/// their vectors (each chunk's own, then its facets').
type UnitJob<'a> = (&'a SourceFile, &'a Vec<Chunk>, Vec<&'a Chunk>, Vec<Vec<f32>>);

/// Changed files compiled together: enough to keep both cores busy and batch embedding calls,
/// few enough that their vectors stay small.
const FILES_PER_BATCH: usize = 64;

/// The units of the files that changed (`Compiled::Fresh`), in source order, reporting
/// progress after each batch.
pub(super) fn compile_changed(
    checked: &Checked,
    opts: &BuildOptions<'_>,
    vectors_cache: &mut EmbeddingCache,
) -> Result<Vec<Unit>, EmbedderError> {
    let embedder = opts.embedder;
    let total = checked.sources.len();
    // Files that changed, in batches: each batch's texts are embedded in one call (batched and
    // cached), then its units compile on all cores; batches keep both cores busy and give the
    // progress bar steps.
    let fresh: Vec<(usize, &SourceFile, &Vec<Chunk>)> = checked
        .sources
        .iter()
        .zip(&checked.files)
        .enumerate()
        .filter_map(|(i, (source, file))| match file {
            Compiled::Fresh(found) => Some((i, source, found)),
            Compiled::Cached(_) => None,
        })
        .collect();
    let mut fresh_units = Vec::with_capacity(fresh.len());
    let (format, unit_cache, facets) = (opts.vectors, opts.cache, opts.facets);
    fn facets_of(c: &Chunk, on: bool) -> &[String] {
        if on { &c.facets } else { &[] }
    }
    for batch in fresh.chunks(FILES_PER_BATCH) {
        let admitted: Vec<Vec<&Chunk>> = batch
            .iter()
            .map(|(_, _, found)| found.iter().filter(|c| opts.audience.admits(c.visibility)).collect())
            .collect();
        // Each chunk's text, then its facets: `Unit::compile` reads them back in that order.
        let texts: Vec<&str> = admitted
            .iter()
            .flatten()
            .flat_map(|c| std::iter::once(c.text.as_str()).chain(facets_of(c, facets).iter().map(String::as_str)))
            .collect();
        let mut vectors = vectors_cache.embed(embedder, &texts)?.into_iter();
        let jobs: Vec<UnitJob<'_>> = batch
            .iter()
            .zip(admitted)
            .map(|((_, source, found), admitted)| {
                let rows = admitted.iter().map(|c| 1 + facets_of(c, facets).len()).sum();
                let vectors = vectors.by_ref().take(rows).collect();
                (*source, *found, admitted, vectors)
            })
            .collect();
        fresh_units.par_extend(jobs.par_iter().map(|(source, found, admitted, vectors)| {
            let warnings: Vec<&Diagnostic> =
                checked.diagnostics.iter().filter(|d| d.primary.file == source.rel).collect();
            let unit = Unit::compile(admitted, vectors, format, found.len(), &warnings, facets);
            if let Some(cache) = unit_cache {
                cache.put(&source.rel, &source.sha256, &unit);
            }
            unit
        }));
        if let (Some(progress), Some((i, _, _))) = (opts.progress, batch.last()) {
            progress(i + 1, total);
        }
    }
    if let Some(progress) = opts.progress {
        progress(total, total);
    }
    Ok(fresh_units)
}

/// Every file's unit in source order: the fresh ones just compiled, the others from the cache.
pub(super) fn in_source_order<'a>(checked: &'a Checked, fresh_units: &'a [Unit]) -> Vec<&'a Unit> {
    let mut fresh_units = fresh_units.iter();
    checked
        .files
        .iter()
        .map(|file| match file {
            Compiled::Fresh(_) => fresh_units.next().expect("one fresh unit per fresh file"),
            Compiled::Cached(unit) => &**unit,
        })
        .collect()
}
