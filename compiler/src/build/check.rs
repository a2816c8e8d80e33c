//! Checking: every source below the root read, validated and chunked (or taken from the unit
//! cache), with the diagnostics of all of them in one sorted list.

use std::path::Path;

use rayon::prelude::*;

use crate::chunk::Chunk;
use crate::diag::{Diagnostic, Severity};
use crate::sources::{self, SourceFile, SourceMap};
use crate::unit::{Unit, UnitCache};

/// One source file after checking: freshly chunked, or its compiled unit from the cache.
#[derive(Debug)]
pub enum Compiled {
    Fresh(Vec<Chunk>),
    Cached(Box<Unit>),
}

impl Compiled {
    /// Chunks in the file before any audience filter.
    pub fn chunks_found(&self) -> usize {
        match self {
            Compiled::Fresh(chunks) => chunks.len(),
            Compiled::Cached(unit) => unit.chunks_found as usize,
        }
    }
}

/// The result of checking a knowledge base: always produced, whatever the input.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Vec<SourceFile>,
    /// Per source, in the same order.
    pub files: Vec<Compiled>,
    pub diagnostics: Vec<Diagnostic>,
    pub map: SourceMap,
    /// The root's `persona.yaml`, when it has one without errors.
    pub persona: Option<format::Persona>,
}

impl Checked {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count()
    }
    /// Files taken from the build cache as compiled units.
    pub fn cached_files(&self) -> usize {
        self.files.iter().filter(|f| matches!(f, Compiled::Cached(_))).count()
    }

    pub fn chunks_found(&self) -> usize {
        self.files.iter().map(Compiled::chunks_found).sum()
    }
}

/// Validate and chunk every source below `root`. With a cache, unchanged files are taken from
/// it as compiled units (their warnings replayed) instead of being parsed again.
pub fn check(root: &Path, cache: Option<&UnitCache>) -> Checked {
    let mut out = Checked::default();
    if !root.is_dir() {
        out.diagnostics.push(Diagnostic::error(
            "unreadable",
            &root.display().to_string(),
            Default::default(),
            "not a folder",
        ));
        return out;
    }
    let paths = sources::discover(root, &mut out.diagnostics);
    if paths.is_empty() && out.diagnostics.is_empty() {
        out.diagnostics.push(
            Diagnostic::error(
                "empty",
                &root.display().to_string(),
                Default::default(),
                "no knowledge-base files here (.yaml, .yml, .resume.json, .jsonl, .md)",
            )
            .hint("point lorec at the folder that holds the knowledge base"),
        );
    }
    // Files check independently, so they check on all cores; results keep the file order.
    let outcomes: Vec<FileOutcome> = paths.par_iter().map(|path| check_file(root, path, cache)).collect();
    for outcome in outcomes {
        out.diagnostics.extend(outcome.diagnostics);
        out.map.absorb(outcome.map);
        if outcome.persona.is_some() {
            out.persona = outcome.persona;
        }
        if let Some((source, compiled)) = outcome.file {
            out.sources.push(source);
            out.files.push(compiled);
        }
    }
    out.diagnostics.sort_by(|a, b| {
        (a.severity, &a.primary.file, a.primary.pos).cmp(&(b.severity, &b.primary.file, b.primary.pos))
    });
    out
}

/// What checking one file produced.
struct FileOutcome {
    file: Option<(SourceFile, Compiled)>,
    diagnostics: Vec<Diagnostic>,
    /// The file's text, kept only when a diagnostic needs it for a snippet.
    map: SourceMap,
    persona: Option<format::Persona>,
}

fn check_file(root: &Path, path: &Path, cache: Option<&UnitCache>) -> FileOutcome {
    let mut diagnostics = Vec::new();
    let mut map = SourceMap::default();
    let Some(source) = sources::read(root, path, &mut diagnostics) else {
        return FileOutcome { file: None, diagnostics, map, persona: None };
    };
    // The persona is not knowledge: no chunks, never cached (it parses in microseconds).
    if crate::persona::is_persona(&source.rel) {
        let persona = crate::persona::compile(&source, &mut map, &mut diagnostics);
        if diagnostics.is_empty() {
            map = SourceMap::default();
        }
        return FileOutcome { file: Some((source, Compiled::Fresh(Vec::new()))), diagnostics, map, persona };
    }
    let compiled = match cache.and_then(|c| c.get(&source.rel, &source.sha256)) {
        Some(unit) => {
            diagnostics.extend(unit.warnings(&source.rel));
            if !diagnostics.is_empty() {
                let text = String::from_utf8_lossy(&source.bytes);
                map.insert(&source.rel, text.strip_prefix('\u{feff}').unwrap_or(&text));
            }
            Compiled::Cached(Box::new(unit))
        }
        None => {
            let chunks = sources::compile(&source, &mut map, &mut diagnostics);
            if diagnostics.is_empty() {
                map = SourceMap::default();
            }
            Compiled::Fresh(chunks)
        }
    };
    FileOutcome { file: Some((source, compiled)), diagnostics, map, persona: None }
}
