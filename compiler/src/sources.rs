//! Finding, reading and parsing the files of a knowledge base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chunk::{Chunk, chunk_file};
use crate::diag::{Diagnostic, Pos, SourceLookup};
use crate::yaml;

/// One input file, read and hashed.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the knowledge-base root, `/`-separated.
    pub rel: String,
    pub sha256: [u8; 32],
    pub bytes: Vec<u8>,
}

/// The text of every readable source, for rendering snippets under diagnostics.
#[derive(Debug, Default)]
pub struct SourceMap(BTreeMap<String, String>);

impl SourceMap {
    pub fn insert(&mut self, rel: &str, text: &str) {
        self.0.insert(rel.to_string(), text.to_string());
    }

    /// Take over every file of `other`.
    pub fn absorb(&mut self, other: SourceMap) {
        self.0.extend(other.0);
    }
}

impl SourceLookup for SourceMap {
    fn line(&self, file: &str, line: usize) -> Option<&str> {
        self.0.get(file)?.lines().nth(line.checked_sub(1)?)
    }
}

/// Whether lore compiles this file name.
pub fn is_source(name: &str) -> bool {
    [".yaml", ".yml", ".resume.json", ".jsonl", ".md", ".markdown"].iter().any(|ext| name.ends_with(ext))
}

/// Every source below `root`, sorted, skipping hidden files and folders. Unreadable folders
/// become diagnostics. Symlinked files are followed; symlinked folders are not (a link can form
/// a cycle or reach outside the knowledge base), with a warning. A source name that is not a
/// regular file once links are followed (a FIFO, a socket, a device such as a link to
/// `/dev/zero`) is an error and is never opened: reading a FIFO blocks, a device never ends.
pub fn discover(root: &Path, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                diags.push(Diagnostic::error(
                    "unreadable",
                    &dir.display().to_string(),
                    Pos::NONE,
                    format!("cannot read folder: {e}"),
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(own) = entry.file_type() else {
                if is_source(&name) {
                    found.push(path); // `read` says why it cannot be read.
                }
                continue;
            };
            if own.is_dir() {
                pending.push(path);
                continue;
            }
            let link = own.is_symlink();
            // What the entry is once links are followed; a broken link is left to `read`,
            // which reports why it cannot be read.
            let Ok(meta) = std::fs::metadata(&path) else {
                if is_source(&name) {
                    found.push(path);
                }
                continue;
            };
            let rel = relative(root, &path);
            let target = || std::fs::read_link(&path).map(|t| format!(" → {}", t.display())).unwrap_or_default();
            if meta.is_dir() {
                diags.push(
                    Diagnostic::warning(
                        "symlinked-folder",
                        &rel,
                        Pos::NONE,
                        format!("symlinked folder not followed: {rel}{}", target()),
                    )
                    .hint(
                        "lorec does not follow links to folders: they can form cycles or reach outside the \
                         knowledge base. Move or copy the folder in, or link its files one by one",
                    ),
                );
            } else if is_source(&name) && meta.is_file() {
                found.push(path);
            } else if is_source(&name) {
                let via = if link { target() } else { String::new() };
                diags.push(
                    Diagnostic::error(
                        "not-a-file",
                        &rel,
                        Pos::NONE,
                        format!("not a regular file: {}{via}", format::fsio::kind_of(&meta)),
                    )
                    .hint("lorec reads only regular files; remove it, or rename it so it does not look like a source"),
                );
            }
        }
    }
    found.sort();
    found
}

pub fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Read one file, at most [`format::fsio::MAX_SOURCE_BYTES`] of it; unreadable files, files
/// over the limit, and anything that is not a regular file become a diagnostic.
pub fn read(root: &Path, path: &Path, diags: &mut Vec<Diagnostic>) -> Option<SourceFile> {
    use format::fsio::{MAX_SOURCE_BYTES, ReadError, read_regular};
    let rel = relative(root, path);
    match read_regular(path, MAX_SOURCE_BYTES) {
        Ok(bytes) => Some(SourceFile { sha256: Sha256::digest(&bytes).into(), rel, bytes }),
        Err(e) => {
            let (message, hint) = match e {
                ReadError::NotRegular { kind, .. } => (
                    format!("not a regular file: this is {kind}"),
                    "lore reads regular files only; remove it or rename it to a name lorec does not read",
                ),
                ReadError::TooLarge { len, limit, .. } => (
                    format!("the file is {len} bytes; the limit for one source file is {limit} bytes"),
                    "split it into several files",
                ),
                ReadError::Changed { .. } => {
                    ("the file changed while it was read".to_string(), "build again once nothing writes to it")
                }
                ReadError::Io { error, .. } => (format!("cannot read file: {error}"), "check the file's permissions"),
            };
            diags.push(Diagnostic::error("unreadable", &rel, Pos::default(), message).hint(hint));
            None
        }
    }
}

/// Decode, parse, validate and chunk one source. Diagnostics go to `diags`.
pub fn compile(source: &SourceFile, map: &mut SourceMap, diags: &mut Vec<Diagnostic>) -> Vec<Chunk> {
    let text = match std::str::from_utf8(&source.bytes) {
        Ok(t) => t,
        Err(e) => {
            let before = &source.bytes[..e.valid_up_to()];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
            map.insert(&source.rel, &String::from_utf8_lossy(&source.bytes));
            diags.push(
                Diagnostic::error(
                    "invalid-utf8",
                    &source.rel,
                    Pos { line, col },
                    format!("invalid UTF-8 (byte 0x{:02x})", source.bytes[e.valid_up_to()]),
                )
                .label("this byte is not UTF-8")
                .hint("save the file as UTF-8"),
            );
            return Vec::new();
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    map.insert(&source.rel, text);
    let chunks = if source.rel.ends_with(".jsonl") {
        crate::jsonl::compile(&source.rel, text, diags)
    } else if source.rel.ends_with(".md") || source.rel.ends_with(".markdown") {
        crate::markdown::compile(&source.rel, text, diags)
    } else {
        match yaml::parse(&source.rel, text, diags) {
            Some(root) => chunk_file(&source.rel, &root, diags),
            None => Vec::new(),
        }
    };
    crate::passages::split_long(chunks)
}
