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

/// A read-only memory map of an artifact file.
#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only (memmap2 maps it shared). The hazard of any file map
        // is another process truncating or rewriting the file in place while it is mapped.
        // lorec never does: it writes a temporary file and renames it over the old one, which
        // leaves this inode (and so this map) untouched. Artifacts are build outputs that
        // nothing edits in place; ARCHITECTURE.md states this invariant.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile { map })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Drop the resident pages of `range`: the sealed index is read once, to decrypt it into
    /// its own buffer, and would otherwise be counted twice in the resident set. Failure only
    /// costs memory, so it is ignored.
    pub fn release(&self, range: Range<usize>) {
        #[cfg(unix)]
        if range.end <= self.map.len() {
            // SAFETY: the map is shared, read-only and file-backed (memmap2 maps read-only
            // files MAP_SHARED), and for such a map MADV_DONTNEED only drops pages: the next
            // read faults them in again from the file, so every byte any borrow sees stays the
            // same, because artifacts are never modified in place (see `open`).
            let _ = unsafe {
                self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len())
            };
        }
    }
}

/// The model section (the embedder), read in place from the map after one validation.
#[derive(Debug)]
pub struct ModelView {
    file: MappedFile,
    range: Range<usize>,
    format_version: u32,
}

impl ModelView {
    /// Validate `file[range]` as a model section of an artifact written as `format_version`.
    pub fn new(file: MappedFile, range: Range<usize>, format_version: u32) -> Result<Self, (MappedFile, String)> {
        let checked = match file.bytes().get(range.clone()) {
            Some(bytes) => format::embed::check_model_section(bytes, format_version),
            None => Err("the section lies outside the file".to_string()),
        };
        match checked {
            Ok(()) => Ok(ModelView { file, range, format_version }),
            Err(e) => Err((file, e)),
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

    /// The whole mapped file.
    pub fn file_bytes(&self) -> &[u8] {
        self.file.bytes()
    }
}

/// The decrypted index, validated once.
#[derive(Debug)]
pub struct IndexView {
    bytes: SectionData,
}

impl IndexView {
    pub fn new(bytes: SectionData) -> Result<Self, String> {
        rkyv::access::<ArchivedIndex, rancor::Error>(&bytes).map_err(|e| e.to_string())?;
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
        rkyv::access::<ArchivedTextBlock, rancor::Error>(&bytes).map_err(|e| e.to_string())?;
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
