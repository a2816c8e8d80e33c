//! The one place lore uses `unsafe`: memory-mapping the artifact and zero-copy views into it.
//!
//! Each view validates its bytes once, when it is built, and afterwards hands out archived
//! references without re-checking. Everything else in the workspace forbids `unsafe`.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use format::container::SectionData;
use format::embed::ModelRef;
use format::{ArchivedEmbedderModel, ArchivedIndex, ArchivedTextBlock};
use memmap2::Mmap;
use rkyv::rancor;
use rkyv::rend::f32_le;

#[cfg(not(target_endian = "little"))]
compile_error!("lore artifacts store little-endian floats that are read in place; big-endian hosts are not supported");

/// How an artifact's bytes are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Memory-map the file: starts in milliseconds, shares pages between processes. A file
    /// changed in place while mapped is detected (see [`MappedFile::changed`]).
    #[default]
    Map,
    /// Read the file into private memory: costs its size in memory and a read at start-up,
    /// and makes the running server immune to anything done to the file afterwards.
    Copy,
}

enum Backing {
    Map(Mmap),
    Copy(rkyv::util::AlignedVec<64>),
}

/// What identifies the file's contents as they were when opened: an in-place write changes
/// the modification or status-change time, a truncation the length too.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Identity {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Which file a path names and what state it is in: device, inode, size and times. The
/// registry compares stamps to notice an artifact replaced by rename (a new inode) or
/// rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        #[cfg(unix)]
        let (dev, ino) = (meta.dev(), meta.ino());
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        FileStamp { dev, ino, len: meta.len(), modified: meta.modified().ok() }
    }

    /// The stamp of what `path` names now (following symbolic links, as opening it does).
    pub fn of_path(path: &Path) -> std::io::Result<FileStamp> {
        std::fs::metadata(path).map(|m| FileStamp::of(&m))
    }
}

impl Identity {
    /// Same length and modification time: all that can be asked of a file that is no longer
    /// linked anywhere, because unlinking it (a new artifact renamed over its path) changed its
    /// status-change time without touching its bytes.
    fn same_contents(&self, other: &Identity) -> bool {
        self.len == other.len && self.modified == other.modified
    }
}

/// Whether the file has no name left: it was replaced (renamed over) or deleted. Nobody can
/// open it anew, so only a writer that already had it open could still change it.
fn unlinked(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        meta.nlink() == 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// A read-only view of an artifact file: a memory map, or a private copy.
pub struct MappedFile {
    backing: Backing,
    /// The opened file, kept so that its identity can be checked on the very inode mapped,
    /// whatever has since been renamed over its path.
    file: File,
    identity: Identity,
    stamp: FileStamp,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backing {
            Backing::Map(_) => "map",
            Backing::Copy(_) => "copy",
        };
        write!(f, "MappedFile({kind}, {} bytes)", self.bytes().len())
    }
}

impl MappedFile {
    pub fn open(path: &Path, mode: LoadMode) -> Result<Self, format::fsio::ReadError> {
        let io = |error| format::fsio::ReadError::Io { path: path.display().to_string(), error };
        // A regular file only: a FIFO would block the open, a device would map or read forever.
        let (mut file, meta) = format::fsio::open_regular(path)?;
        let identity = Identity::of(&meta);
        let stamp = FileStamp::of(&meta);
        let backing = match mode {
            LoadMode::Map => {
                // SAFETY: the map is read-only (memmap2 maps it shared). The hazard of any
                // file map is another process truncating or rewriting the file in place while
                // it is mapped: reads of a truncated page raise SIGBUS, rewritten pages change
                // under borrowed slices. lorec never does this (it writes a temporary and
                // renames it, leaving this inode untouched), and the engine checks `changed`
                // before every query and refuses to read a file that changed, so only a change
                // landing inside one query's few microseconds can reach a read. Operators who
                // cannot rule out in-place writers use `LoadMode::Copy`. ARCHITECTURE.md
                // states this invariant.
                Backing::Map(unsafe { Mmap::map(&file).map_err(io)? })
            }
            LoadMode::Copy => {
                let len = usize::try_from(meta.len()).map_err(|_| io(std::io::ErrorKind::OutOfMemory.into()))?;
                let mut buf = rkyv::util::AlignedVec::<64>::with_capacity(len);
                buf.resize(len, 0);
                std::io::Read::read_exact(&mut file, &mut buf).map_err(io)?;
                Backing::Copy(buf)
            }
        };
        Ok(MappedFile { backing, file, identity, stamp })
    }

    /// The file as it was when opened.
    pub fn stamp(&self) -> FileStamp {
        self.stamp
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Map(map) => map,
            Backing::Copy(buf) => buf,
        }
    }

    /// Why the mapped file can no longer be trusted, if it was changed in place (truncated,
    /// rewritten, copied over) since it was opened. A private copy never changes.
    pub fn changed(&self) -> Option<String> {
        if matches!(self.backing, Backing::Copy(_)) {
            return None;
        }
        match self.file.metadata() {
            Ok(meta) => {
                let now = Identity::of(&meta);
                if now == self.identity || (unlinked(&meta) && now.same_contents(&self.identity)) {
                    None
                } else if now.len != self.identity.len {
                    Some(format!(
                        "the file was truncated or resized in place ({} → {} bytes)",
                        self.identity.len, now.len
                    ))
                } else {
                    Some("the file was rewritten in place".to_string())
                }
            }
            Err(e) => Some(format!("the file can no longer be examined: {e}")),
        }
    }

    /// Drop the resident pages of `range`: the sealed index is read once, to decrypt it into
    /// its own buffer, and would otherwise be counted twice in the resident set. Failure only
    /// costs memory, so it is ignored.
    pub fn release(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let Backing::Map(map) = &self.backing
            && range.end <= map.len()
        {
            // SAFETY: the map is shared, read-only and file-backed (memmap2 maps read-only
            // files MAP_SHARED), and for such a map MADV_DONTNEED only drops pages: the next
            // read faults them in again from the file, so every byte any borrow sees stays the
            // same, because artifacts are never modified in place (see `open`).
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
        }
    }
}

/// The model section (the embedder), read in place from the map after one validation.
#[derive(Debug)]
pub struct ModelView {
    file: std::sync::Arc<MappedFile>,
    range: Range<usize>,
    format_version: u32,
}

impl ModelView {
    /// Validate `file[range]` as a model section of an artifact written as `format_version`.
    pub fn new(file: std::sync::Arc<MappedFile>, range: Range<usize>, format_version: u32) -> Result<Self, String> {
        let checked = match file.bytes().get(range.clone()) {
            Some(bytes) => format::embed::check_model_section(bytes, format_version),
            None => Err("the section lies outside the file".to_string()),
        };
        match checked {
            Ok(()) => Ok(ModelView { file, range, format_version }),
            Err(e) => Err(e),
        }
    }

    pub fn model(&self) -> ModelRef<'_> {
        let bytes = &self.file.bytes()[self.range.clone()];
        if self.format_version < 2 {
            // SAFETY: `new` validated exactly these bytes as this version's type, and the
            // read-only map never changes them (see `MappedFile::open`).
            ModelRef::from_v1(unsafe { rkyv::access_unchecked::<format::v1::ArchivedEmbedderModel>(bytes) })
        } else {
            // SAFETY: as above.
            ModelRef::from_current(unsafe { rkyv::access_unchecked::<ArchivedEmbedderModel>(bytes) })
        }
    }

    pub fn file(&self) -> &MappedFile {
        &self.file
    }
}

/// The decrypted index, validated once.
#[derive(Debug)]
pub struct IndexView {
    bytes: SectionData,
}

impl IndexView {
    pub fn new(bytes: SectionData) -> Result<Self, String> {
        rkyv::access::<ArchivedIndex, rancor::Error>(&bytes).map_err(|_| {
            "its bytes are not a valid index (the artifact is damaged; run `lorec verify` on it)".to_string()
        })?;
        Ok(IndexView { bytes })
    }

    pub fn index(&self) -> &ArchivedIndex {
        // SAFETY: `new` validated these bytes and `self.bytes` is never mutated.
        unsafe { rkyv::access_unchecked::<ArchivedIndex>(&self.bytes) }
    }
}

/// One decrypted text block, validated once.
#[derive(Debug)]
pub struct BlockView {
    bytes: SectionData,
}

impl BlockView {
    pub fn new(bytes: SectionData) -> Result<Self, String> {
        rkyv::access::<ArchivedTextBlock, rancor::Error>(&bytes).map_err(|_| {
            "its bytes are not a valid text block (the artifact is damaged; run `lorec verify` on it)".to_string()
        })?;
        Ok(BlockView { bytes })
    }

    pub fn block(&self) -> &ArchivedTextBlock {
        // SAFETY: `new` validated these bytes and `self.bytes` is never mutated.
        unsafe { rkyv::access_unchecked::<ArchivedTextBlock>(&self.bytes) }
    }
}

/// Reinterpret archived little-endian floats as native floats, without copying.
pub fn native_f32(values: &[f32_le]) -> &[f32] {
    // SAFETY: `f32_le` is `#[repr(C, align(4))]` around one `f32` stored in little-endian
    // order, so it has the size and alignment of `f32`; on little-endian targets (enforced by
    // the `compile_error!` above) its bits are the native value. Every bit pattern is a valid
    // `f32`, and the returned slice borrows `values`, so lifetime and length carry over.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) }
}
