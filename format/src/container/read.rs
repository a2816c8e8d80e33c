//! Reading an artifact: the structural checks of opening, and decrypting and decompressing
//! its sections, whole, in parallel stripes, or one unit at a time.

use rayon::prelude::*;
use rkyv::rancor;
use rkyv::util::AlignedVec;
use sha2::{Digest, Sha256};

use super::digest::{digest_header, plaintext_digest};
use super::{ContainerError, FLAG_SEALED, MAX_PLAIN_LEN, PREAMBLE_LEN, SECTION_ALIGN, TRAILER_LEN, TRAILER_MAGIC};
use crate::schema::{ArchivedHeader, Cipher, Compression, Header, Section, SectionKind};
use crate::seal::{Key, KeyId, SealError, Sealer, TAG_LEN};
use crate::{FORMAT_VERSION, MAGIC, OLDEST_SUPPORTED};

/// Decrypt and decompress one unit of a section: `sealed` is its stored bytes.
pub fn open_unit(
    sealer: Option<&Sealer>,
    kind: SectionKind,
    unit: u64,
    sealed: &[u8],
    encrypted: bool,
    compression: Compression,
    plain_len: usize,
) -> Result<SectionData, ContainerError> {
    let what = format!("{} section unit {unit}", kind.name());
    let decrypted;
    let stored: &[u8] = if encrypted {
        let sealer = sealer
            .ok_or_else(|| ContainerError::Corrupt(format!("{what} is encrypted but the artifact has no cipher")))?;
        decrypted = sealer.open(kind.tag(), unit, sealed, &what)?;
        &decrypted
    } else {
        sealed
    };
    // The claimed length is checked against what is stored (or the decompression bound)
    // before anything is allocated: in an unsealed artifact it is not authenticated.
    let mut out;
    match compression {
        Compression::None => {
            if stored.len() != plain_len {
                return Err(ContainerError::Corrupt(format!("{what} has the wrong length")));
            }
            out = SectionData::with_capacity(plain_len);
            out.extend_from_slice(stored);
        }
        Compression::Zstd => {
            let plain = crate::compress::zstd_decompress(stored, plain_len)
                .map_err(|e| ContainerError::Corrupt(format!("{what} does not decompress: {e}")))?;
            out = SectionData::with_capacity(plain_len);
            out.extend_from_slice(&plain);
        }
    }
    Ok(out)
}

/// Decrypt the stripes of one section in parallel, in place, into one aligned buffer.
/// `done_with` gets each stripe's stored range (relative to `stored`) once it is decrypted.
fn open_striped(
    sealer: Option<&Sealer>,
    kind: SectionKind,
    stored: &[u8],
    stripe_len: usize,
    plain_len: usize,
    done_with: &(dyn Fn(std::ops::Range<usize>) + Sync),
) -> Result<SectionData, ContainerError> {
    let what = format!("{} section", kind.name());
    let sealer =
        sealer.ok_or_else(|| ContainerError::Corrupt(format!("{what} is encrypted but the artifact has no cipher")))?;
    let count = plain_len.div_ceil(stripe_len);
    if stored.len() != plain_len + count * TAG_LEN {
        return Err(ContainerError::Corrupt(format!("{what} has the wrong length for its stripes")));
    }
    let mut out = SectionData::with_capacity(plain_len);
    out.resize(plain_len, 0);
    out.par_chunks_mut(stripe_len).enumerate().try_for_each(|(unit, plain)| {
        let at = unit * (stripe_len + TAG_LEN);
        let (ct, tag) = stored[at..at + plain.len() + TAG_LEN].split_at(plain.len());
        plain.copy_from_slice(ct);
        sealer.open_in_place(kind.tag(), unit as u64, plain, tag, &format!("{what} stripe {unit}"))?;
        done_with(at..at + plain.len() + TAG_LEN);
        Ok::<(), SealError>(())
    })?;
    Ok(out)
}

/// A structurally checked artifact over borrowed bytes (usually a memory map).
#[derive(Debug)]
pub struct OpenedContainer<'a> {
    bytes: &'a [u8],
    pub format_version: u32,
    pub min_reader_version: u32,
    pub header: Header,
    pub header_digest: [u8; 32],
}

/// Decrypted-and-decompressed section bytes, aligned for rkyv.
pub type SectionData = AlignedVec<16>;

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

impl<'a> OpenedContainer<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Self, ContainerError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(ContainerError::NotAnArtifact("the file does not start with the lore magic bytes".into()));
        }
        if bytes.len() < PREAMBLE_LEN + TRAILER_LEN {
            return Err(ContainerError::Truncated(format!(
                "{} bytes is shorter than the smallest possible artifact",
                bytes.len()
            )));
        }
        let format_version = le_u32(bytes, 8);
        let min_reader_version = le_u32(bytes, 12);
        if format_version < OLDEST_SUPPORTED {
            return Err(ContainerError::TooOld {
                found: format_version,
                oldest: OLDEST_SUPPORTED,
                newest: FORMAT_VERSION,
            });
        }
        if format_version > FORMAT_VERSION && min_reader_version > FORMAT_VERSION {
            return Err(ContainerError::TooNew {
                found: format_version,
                oldest: OLDEST_SUPPORTED,
                newest: FORMAT_VERSION,
            });
        }
        let header_len = le_u32(bytes, 16) as usize;
        let flags = le_u32(bytes, 20);
        let header_digest: [u8; 32] = bytes[24..56].try_into().expect("32-byte slice");
        let trailer_at = bytes.len() - TRAILER_LEN;
        if bytes[trailer_at..trailer_at + 8] != TRAILER_MAGIC {
            return Err(ContainerError::Truncated(
                "the trailer is missing (the file was cut short or appended to)".into(),
            ));
        }
        if PREAMBLE_LEN + header_len > trailer_at {
            return Err(ContainerError::Truncated(format!(
                "the header claims {header_len} bytes, more than the file holds"
            )));
        }
        let raw_header = &bytes[PREAMBLE_LEN..PREAMBLE_LEN + header_len];
        if digest_header(bytes, raw_header) != header_digest {
            return Err(ContainerError::Corrupt("the header does not match its digest".into()));
        }
        // The header is small; copying it guarantees alignment whatever buffer we were handed.
        let mut aligned = AlignedVec::<16>::with_capacity(header_len);
        aligned.extend_from_slice(raw_header);
        let archived = rkyv::access::<ArchivedHeader, rancor::Error>(&aligned)
            .map_err(|_| ContainerError::Corrupt("the header is malformed".into()))?;
        let header: Header = rkyv::deserialize::<Header, rancor::Error>(archived)
            .map_err(|_| ContainerError::Corrupt("the header is malformed".into()))?;

        let sealed = flags & FLAG_SEALED != 0;
        if sealed != matches!(header.cipher, Cipher::Aes256Gcm { .. }) {
            return Err(ContainerError::Corrupt("the preamble flags disagree with the header cipher".into()));
        }
        let mut end_of_previous = PREAMBLE_LEN + header_len;
        for section in &header.sections {
            let name = section.kind.name();
            let start = usize::try_from(section.offset).unwrap_or(usize::MAX);
            let len = usize::try_from(section.stored_len).unwrap_or(usize::MAX);
            if start % SECTION_ALIGN != 0 || start < end_of_previous {
                return Err(ContainerError::Corrupt(format!("section {name} is misplaced")));
            }
            if start.checked_add(len).is_none_or(|end| end > trailer_at) {
                return Err(ContainerError::Truncated(format!("section {name} runs past the end of the file")));
            }
            if section.plain_len > MAX_PLAIN_LEN || section.stripe_len > MAX_PLAIN_LEN {
                return Err(ContainerError::Corrupt(format!("section {name} claims an impossible size")));
            }
            if section.encrypted && !sealed {
                return Err(ContainerError::Corrupt(format!("section {name} is encrypted in an unsealed artifact")));
            }
            end_of_previous = start + len;
        }
        let has_source_section = format_version >= 3;
        for kind in [SectionKind::Model, SectionKind::Index, SectionKind::Texts, SectionKind::Sources] {
            let expected = usize::from(kind != SectionKind::Sources || has_source_section);
            if header.sections.iter().filter(|s| s.kind == kind).count() != expected {
                return Err(ContainerError::Corrupt(format!(
                    "expected {} {} section in a format v{format_version} artifact",
                    if expected == 1 { "exactly one" } else { "no" },
                    kind.name()
                )));
            }
        }
        // The persona section: at most one, and only since format v6.
        let personas = header.sections.iter().filter(|s| s.kind == SectionKind::Persona).count();
        if personas > usize::from(format_version >= 6) {
            return Err(ContainerError::Corrupt(format!(
                "{personas} persona sections in a format v{format_version} artifact"
            )));
        }
        if has_source_section && !header.sources.is_empty() {
            return Err(ContainerError::Corrupt("the header lists sources outside the sources section".into()));
        }
        Ok(OpenedContainer { bytes, format_version, min_reader_version, header, header_digest })
    }

    pub fn section(&self, kind: SectionKind) -> &Section {
        self.header.sections.iter().find(|s| s.kind == kind).expect("open() checked that every section kind is present")
    }

    pub fn has_section(&self, kind: SectionKind) -> bool {
        self.header.sections.iter().any(|s| s.kind == kind)
    }

    /// The persona (format v6, when the knowledge base had a `persona.yaml`), decrypted and
    /// checked against its digest.
    pub fn persona(&self, sealer: Option<&Sealer>) -> Result<Option<crate::schema::Persona>, ContainerError> {
        if !self.has_section(SectionKind::Persona) {
            return Ok(None);
        }
        let plain = self.open_checked(sealer, SectionKind::Persona)?;
        let archived = rkyv::access::<crate::schema::ArchivedPersona, rancor::Error>(&plain)
            .map_err(|_| ContainerError::Corrupt("the persona section is malformed".into()))?;
        rkyv::deserialize::<_, rancor::Error>(archived)
            .map(Some)
            .map_err(|_| ContainerError::Corrupt("the persona section is malformed".into()))
    }

    /// The stored bytes of a section, exactly as on disk.
    pub fn raw_section(&self, kind: SectionKind) -> &'a [u8] {
        let s = self.section(kind);
        &self.bytes[s.offset as usize..(s.offset + s.stored_len) as usize]
    }

    /// Build the cipher for this artifact, checking the key against the header's key id.
    pub fn sealer(&self, key: Option<&Key>) -> Result<Option<Sealer>, ContainerError> {
        match self.header.cipher {
            Cipher::None => Ok(None),
            Cipher::Aes256Gcm { key_id, salt } => {
                let expected = KeyId(key_id);
                let key = key.ok_or(ContainerError::KeyRequired { key_id: expected })?;
                if key.id() != expected {
                    return Err(ContainerError::WrongKey { expected, given: key.id() });
                }
                Ok(Some(Sealer::new(key, &salt, self.header_digest)))
            }
        }
    }

    /// Open a whole single-plaintext section (model or index); striped sections are opened
    /// on all cores.
    pub fn open_section(&self, sealer: Option<&Sealer>, kind: SectionKind) -> Result<SectionData, ContainerError> {
        self.open_section_with(sealer, kind, &|_| {})
    }

    /// [`Self::open_section`], telling `done_with` which file ranges (absolute offsets) it has
    /// finished reading as it goes, so a caller reading from a map can let their pages go.
    pub fn open_section_with(
        &self,
        sealer: Option<&Sealer>,
        kind: SectionKind,
        done_with: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) -> Result<SectionData, ContainerError> {
        let s = self.section(kind);
        let base = s.offset as usize;
        let absolute = |r: std::ops::Range<usize>| done_with(base + r.start..base + r.end);
        if s.encrypted && s.stripe_len > 0 && s.compression == Compression::None {
            return open_striped(
                sealer,
                kind,
                self.raw_section(kind),
                s.stripe_len as usize,
                s.plain_len as usize,
                &absolute,
            );
        }
        let data =
            open_unit(sealer, kind, 0, self.raw_section(kind), s.encrypted, s.compression, s.plain_len as usize)?;
        absolute(0..s.stored_len as usize);
        Ok(data)
    }

    /// The source files the artifact was built from: the header's list before format v3, the
    /// sources section (decrypted and checked against its digest) since.
    pub fn sources(&self, sealer: Option<&Sealer>) -> Result<crate::schema::SourceList, ContainerError> {
        if self.format_version < 3 {
            return Ok(crate::schema::SourceList { sources: self.header.sources.clone(), withheld: Vec::new() });
        }
        let plain = self.open_checked(sealer, SectionKind::Sources)?;
        let archived = rkyv::access::<crate::schema::ArchivedSourceList, rancor::Error>(&plain)
            .map_err(|_| ContainerError::Corrupt("the sources section is malformed".into()))?;
        rkyv::deserialize::<_, rancor::Error>(archived)
            .map_err(|_| ContainerError::Corrupt("the sources section is malformed".into()))
    }

    /// A section decrypted and checked against its plaintext digest, for the small sections
    /// read whole (persona, sources).
    fn open_checked(&self, sealer: Option<&Sealer>, kind: SectionKind) -> Result<SectionData, ContainerError> {
        let plain = self.open_section(sealer, kind)?;
        let section = self.section(kind);
        if plaintext_digest(self.format_version, section.stripe_len, &plain) != section.plain_sha256 {
            return Err(ContainerError::Corrupt(format!("the {} section does not match its digest", kind.name())));
        }
        Ok(plain)
    }

    /// Check the plain model section against its digest (hashing its units on all cores), so
    /// a model altered on disk is refused before it is used in place. In a sealed artifact the
    /// digest is in the header, which every sealed unit authenticates, so this ties the model
    /// to the key.
    pub fn check_plain_section(&self, kind: SectionKind) -> Result<(), ContainerError> {
        let section = self.section(kind);
        if section.encrypted || section.compression != Compression::None {
            return Err(ContainerError::Corrupt(format!("the {} section is not stored plain", kind.name())));
        }
        if plaintext_digest(self.format_version, section.stripe_len, self.raw_section(kind)) != section.plain_sha256 {
            return Err(ContainerError::Corrupt(format!(
                "the {} section does not match its digest: the file was modified after it was built; run `lorec verify` on it",
                kind.name()
            )));
        }
        Ok(())
    }

    /// The full integrity check without the key: the trailer digest covers every byte before
    /// it, padding included, and padding must be zero.
    pub fn verify_bytes(&self) -> Result<(), ContainerError> {
        let trailer_at = self.bytes.len() - TRAILER_LEN;
        let digest: [u8; 32] = Sha256::digest(&self.bytes[..trailer_at]).into();
        if digest[..] != self.bytes[trailer_at + 8..] {
            return Err(ContainerError::Corrupt("the file digest in the trailer does not match its contents".into()));
        }
        let header_end = PREAMBLE_LEN + le_u32(self.bytes, 16) as usize;
        let mut gaps = vec![(56, PREAMBLE_LEN)];
        let mut cursor = header_end;
        for s in &self.header.sections {
            gaps.push((cursor, s.offset as usize));
            cursor = (s.offset + s.stored_len) as usize;
        }
        gaps.push((cursor, trailer_at));
        for (from, to) in gaps {
            if self.bytes[from..to].iter().any(|&b| b != 0) {
                return Err(ContainerError::Corrupt(format!("non-zero padding at bytes {from}..{to}")));
            }
        }
        Ok(())
    }

    pub fn file_len(&self) -> usize {
        self.bytes.len()
    }
}
