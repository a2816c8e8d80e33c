//! The artifact container: preamble, header, aligned sections, trailer. See `docs/format.md`.
//!
//! Opening is cheap and checks structure only: magic, versions, the header's own digest, and
//! that every section lies inside the file. Sections are decrypted lazily by the caller;
//! [`OpenedContainer::verify`] is the full check that reads every byte.

use std::io::Write;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use sha2::{Digest, Sha256};

use crate::schema::{ArchivedHeader, Cipher, Compression, Header, Section, SectionKind};
use crate::seal::{Key, KeyId, SealError, Sealer, TAG_LEN};
use crate::{FORMAT_VERSION, MAGIC, MIN_READER_VERSION, OLDEST_SUPPORTED, PERSONA_MIN_READER_VERSION};

/// Size of the fixed preamble at offset 0.
pub const PREAMBLE_LEN: usize = 64;
/// Sections start at multiples of this, so zero-copy access to a mapped file is aligned.
pub const SECTION_ALIGN: usize = 64;
/// Eight bytes that open the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"LOREEND\0";
/// Trailer: magic + SHA-256 of every byte before the trailer.
pub const TRAILER_LEN: usize = 40;
/// Preamble flag: sections are sealed with AES-256-GCM.
pub const FLAG_SEALED: u32 = 1;
/// No section may claim to decode to more than this.
pub const MAX_PLAIN_LEN: u64 = 1 << 32;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("not a lore artifact: {0}")]
    NotAnArtifact(String),
    #[error(
        "artifact format version {found} is newer than this build understands (it reads {oldest}..={newest}); hint: upgrade lore"
    )]
    TooNew { found: u32, oldest: u32, newest: u32 },
    #[error(
        "artifact format version {found} is older than this build still reads (it reads {oldest}..={newest}); hint: rebuild the artifact with a current lorec"
    )]
    TooOld { found: u32, oldest: u32, newest: u32 },
    #[error("artifact is truncated: {0}")]
    Truncated(String),
    #[error("artifact is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "this artifact is sealed; hint: set LORE_KEY (base64) or LORE_KEY_FILE to the key it was built with (key id {key_id})"
    )]
    KeyRequired { key_id: KeyId },
    #[error("wrong key: the artifact was sealed with key id {expected}, the key given has id {given}")]
    WrongKey { expected: KeyId, given: KeyId },
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Where one unit sits in its section's data, and the SHA-256 of its plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitSpan {
    pub len: usize,
    pub plain_sha256: [u8; 32],
}

/// One section's content as the compiler hands it over: already serialised, its units (one
/// for the model, stripes for a sealed index, blocks for texts) stored back to back in
/// `data`, each already compressed or not.
#[derive(Debug)]
pub struct SectionPlan {
    pub kind: SectionKind,
    /// Non-zero when the units are stripes of one plaintext, each this long but the last.
    pub stripe_len: u64,
    pub encrypt: bool,
    pub compression: Compression,
    pub plain_len: u64,
    pub data: Vec<u8>,
    pub units: Vec<UnitSpan>,
}

impl SectionPlan {
    /// A section that is one uncompressed unit.
    pub fn whole(kind: SectionKind, data: Vec<u8>, encrypt: bool) -> SectionPlan {
        let unit = UnitSpan { len: data.len(), plain_sha256: Sha256::digest(&data).into() };
        SectionPlan {
            kind,
            stripe_len: 0,
            encrypt,
            compression: Compression::None,
            plain_len: data.len() as u64,
            data,
            units: vec![unit],
        }
    }

    /// An uncompressed section sealed in stripes of `stripe_len`, hashed on all cores.
    pub fn striped(kind: SectionKind, data: Vec<u8>, stripe_len: usize, encrypt: bool) -> SectionPlan {
        let stripe_len = stripe_len.max(1);
        let units = stripe_digests(&data, stripe_len)
            .into_iter()
            .zip(data.chunks(stripe_len))
            .map(|(plain_sha256, piece)| UnitSpan { len: piece.len(), plain_sha256 })
            .collect();
        SectionPlan {
            kind,
            stripe_len: stripe_len as u64,
            encrypt,
            compression: Compression::None,
            plain_len: data.len() as u64,
            data,
            units,
        }
    }

    /// The section's `plain_sha256` as format v2 defines it (see [`section_digest`]).
    pub fn plain_sha256(&self) -> [u8; 32] {
        section_digest(self.units.iter().map(|u| &u.plain_sha256))
    }
}

/// Since format v2 a section's digest is the SHA-256 of its units' plaintext digests, in
/// order: a rebuild hashes only the units that changed, and units hash on all cores.
pub fn section_digest<'a>(unit_digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for d in unit_digests {
        hasher.update(d);
    }
    hasher.finalize().into()
}

/// SHA-256 of each `stripe_len`-byte piece of `bytes` (the last may be shorter), on all cores.
pub fn stripe_digests(bytes: &[u8], stripe_len: usize) -> Vec<[u8; 32]> {
    let pieces: Vec<&[u8]> = bytes.chunks(stripe_len.max(1)).collect();
    let mut digests = vec![[0u8; 32]; pieces.len()];
    let per_worker = pieces.len().div_ceil(workers()).max(1);
    std::thread::scope(|scope| {
        for (slots, pieces) in digests.chunks_mut(per_worker).zip(pieces.chunks(per_worker)) {
            scope.spawn(move || {
                for (slot, piece) in slots.iter_mut().zip(pieces) {
                    *slot = Sha256::digest(piece).into();
                }
            });
        }
    });
    digests
}

/// The `plain_sha256` of a single-plaintext section (model, index, sources) of an artifact
/// written as `format_version`: over the concatenated plaintext in v1, over its units' digests
/// since (units of `stripe_len` bytes, or one unit when it is zero), hashed on all cores.
pub fn plaintext_digest(format_version: u32, stripe_len: u64, plain: &[u8]) -> [u8; 32] {
    if format_version < 2 {
        return Sha256::digest(plain).into();
    }
    if stripe_len == 0 {
        return section_digest([&Sha256::digest(plain).into()]);
    }
    section_digest(&stripe_digests(plain, usize::try_from(stripe_len).unwrap_or(usize::MAX)))
}

/// Computes a section's plaintext digest the way its artifact's format version defines it.
#[derive(Debug)]
pub enum SectionHasher {
    /// Format v1: SHA-256 of the concatenated plaintext.
    Concatenated(Sha256),
    /// Format v2 and later: SHA-256 of the units' SHA-256 digests.
    UnitDigests(Sha256),
}

impl SectionHasher {
    pub fn for_version(format_version: u32) -> SectionHasher {
        if format_version < 2 {
            SectionHasher::Concatenated(Sha256::new())
        } else {
            SectionHasher::UnitDigests(Sha256::new())
        }
    }

    /// Feed one unit's plaintext, in order.
    pub fn unit(&mut self, plain: &[u8]) {
        match self {
            SectionHasher::Concatenated(h) => h.update(plain),
            SectionHasher::UnitDigests(h) => h.update(Sha256::digest(plain)),
        }
    }

    pub fn finish(self) -> [u8; 32] {
        match self {
            SectionHasher::Concatenated(h) | SectionHasher::UnitDigests(h) => h.finalize().into(),
        }
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// Bytes a block of `len` occupies on disk.
pub fn stored_len(len: usize, encrypt: bool) -> usize {
    if encrypt { len + TAG_LEN } else { len }
}

fn align_up(n: usize) -> usize {
    n.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

fn header_bytes(header: &Header) -> AlignedVec {
    rkyv::to_bytes::<rancor::Error>(header).expect("serialising plain data into memory cannot fail")
}

/// An artifact laid out and ready to write: offsets are fixed, the header is final.
#[derive(Debug)]
pub struct Container {
    header: Header,
    /// Preamble (header digest included) and header, padded to the first section.
    head: Vec<u8>,
    header_digest: [u8; 32],
    plans: Vec<SectionPlan>,
    /// Offset of the trailer.
    body_len: usize,
}

impl Container {
    /// Fix the layout. `header.sections` is filled in here; `header.cipher` must already name
    /// the key id and salt when the artifact is to be sealed.
    pub fn layout(mut header: Header, plans: Vec<SectionPlan>) -> Container {
        // First pass with placeholder offsets: rkyv's layout does not depend on integer values,
        // so the header's size is known before the real offsets are.
        header.sections = plans
            .iter()
            .map(|p| Section {
                kind: p.kind,
                offset: 0,
                stored_len: p.units.iter().map(|u| stored_len(u.len, p.encrypt) as u64).sum(),
                plain_len: p.plain_len,
                plain_sha256: p.plain_sha256(),
                compression: p.compression,
                encrypted: p.encrypt,
                stripe_len: p.stripe_len,
            })
            .collect();
        let header_len = header_bytes(&header).len();
        let mut cursor = align_up(PREAMBLE_LEN + header_len);
        for section in &mut header.sections {
            section.offset = cursor as u64;
            cursor = align_up(cursor + section.stored_len as usize);
        }
        let header_buf = header_bytes(&header);
        assert_eq!(header_buf.len(), header_len, "header size must not depend on offsets");
        let flags = if matches!(header.cipher, Cipher::Aes256Gcm { .. }) { FLAG_SEALED } else { 0 };
        let mut head = Vec::with_capacity(align_up(PREAMBLE_LEN + header_len));
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let has_persona = header.sections.iter().any(|s| s.kind == SectionKind::Persona);
        let min_reader = if has_persona { PERSONA_MIN_READER_VERSION } else { MIN_READER_VERSION };
        head.extend_from_slice(&min_reader.to_le_bytes());
        head.extend_from_slice(&(header_len as u32).to_le_bytes());
        head.extend_from_slice(&flags.to_le_bytes());
        let header_digest = digest_header(&head, &header_buf);
        head.extend_from_slice(&header_digest);
        head.resize(PREAMBLE_LEN, 0);
        head.extend_from_slice(&header_buf);
        Container { header, head, header_digest, plans, body_len: cursor }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes the artifact will occupy.
    pub fn file_len(&self) -> u64 {
        (self.body_len + TRAILER_LEN) as u64
    }

    /// Write the artifact to `sink`, sealing units on all cores while this thread hashes and
    /// writes them in file order, so sealing, hashing and writing overlap and no copy of the
    /// whole file is ever held. `key` must be given exactly when the header names a cipher.
    pub fn write_to(&self, key: Option<&Key>, sink: &mut impl Write) -> std::io::Result<()> {
        let sealer = match (key, self.header.cipher) {
            (Some(key), Cipher::Aes256Gcm { salt, .. }) => Some(Sealer::new(key, &salt, self.header_digest)),
            (None, Cipher::None) => None,
            _ => return Err(std::io::Error::other("the key and the header's cipher disagree")),
        };
        let mut out = HashingWriter { sink, hasher: Sha256::new(), written: 0 };
        out.write_all(&self.head)?;
        // Every encrypted unit, in file order; workers take them in order and send them back.
        let jobs: Vec<(usize, usize, &[u8])> = self
            .plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.encrypt)
            .flat_map(|(s, p)| {
                let mut from = 0;
                p.units.iter().enumerate().map(move |(u, unit)| {
                    let plain = &p.data[from..from + unit.len];
                    from += unit.len;
                    (s, u, plain)
                })
            })
            .collect();
        if !jobs.is_empty() && sealer.is_none() {
            return Err(std::io::Error::other("a section asks for encryption without a key"));
        }
        let next_job = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| -> std::io::Result<()> {
            let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(64);
            if let Some(sealer) = &sealer {
                for _ in 0..workers() {
                    let (sealed_tx, jobs, next_job) = (sealed_tx.clone(), &jobs, &next_job);
                    scope.spawn(move || {
                        loop {
                            let i = next_job.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&(section, unit, plain)) = jobs.get(i) else { break };
                            let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
                            buf.extend_from_slice(plain);
                            let tag = sealer.seal_in_place(self.plans[section].kind.tag(), unit as u64, &mut buf);
                            buf.extend_from_slice(&tag);
                            if sealed_tx.send((i, buf)).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            drop(sealed_tx);
            let mut waiting = std::collections::BTreeMap::new();
            let mut next = 0;
            for (plan, section) in self.plans.iter().zip(&self.header.sections) {
                out.pad_to(section.offset as usize)?;
                if !plan.encrypt {
                    out.write_all(&plan.data)?;
                    continue;
                }
                for _ in &plan.units {
                    let sealed = loop {
                        if let Some(sealed) = waiting.remove(&next) {
                            break sealed;
                        }
                        let (i, sealed) =
                            sealed_rx.recv().map_err(|_| std::io::Error::other("a sealing worker stopped early"))?;
                        waiting.insert(i, sealed);
                    };
                    out.write_all(&sealed)?;
                    next += 1;
                }
            }
            out.pad_to(self.body_len)
        })?;
        let digest = out.hasher.finalize();
        out.sink.write_all(&TRAILER_MAGIC)?;
        out.sink.write_all(&digest)?;
        out.sink.flush()
    }
}

/// Writes through to a sink while hashing, for the trailer.
struct HashingWriter<'a, W: Write> {
    sink: &'a mut W,
    hasher: Sha256,
    written: usize,
}

impl<W: Write> HashingWriter<'_, W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len();
        self.sink.write_all(bytes)
    }

    /// Zero padding up to an absolute offset.
    fn pad_to(&mut self, offset: usize) -> std::io::Result<()> {
        const ZEROS: [u8; SECTION_ALIGN] = [0; SECTION_ALIGN];
        if self.written > offset {
            return Err(std::io::Error::other("a section's data is longer than its units say"));
        }
        while self.written < offset {
            let n = (offset - self.written).min(ZEROS.len());
            self.write_all(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// Lay out and write a whole artifact into memory (for tests and small tools; `lorec`
/// streams with [`Container::write_to`]).
pub fn write_container(header: Header, plans: Vec<SectionPlan>, key: Option<&Key>) -> Vec<u8> {
    let container = Container::layout(header, plans);
    let mut out = Vec::with_capacity(container.file_len() as usize);
    container.write_to(key, &mut out).expect("writing into memory cannot fail when the key matches the cipher");
    out
}

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
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(count.max(1));
    let per_worker = count.div_ceil(workers.max(1)).max(1);
    let results: Vec<Result<(), SealError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = out
            .chunks_mut(per_worker * stripe_len)
            .enumerate()
            .map(|(w, region)| {
                let what = &what;
                scope.spawn(move || -> Result<(), SealError> {
                    for (j, plain) in region.chunks_mut(stripe_len).enumerate() {
                        let unit = w * per_worker + j;
                        let at = unit * (stripe_len + TAG_LEN);
                        let (ct, tag) = stored[at..at + plain.len() + TAG_LEN].split_at(plain.len());
                        plain.copy_from_slice(ct);
                        sealer.open_in_place(kind.tag(), unit as u64, plain, tag, &format!("{what} stripe {unit}"))?;
                        done_with(at..at + plain.len() + TAG_LEN);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(SealError::Tampered { what: what.clone() })))
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(out)
}

/// The header digest covers the first 24 preamble bytes (magic, versions, header length,
/// flags) and the header itself, so sealing binds all of them.
fn digest_header(preamble: &[u8], header: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(&preamble[..24]).chain_update(header).finalize().into()
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
        let plain = self.open_section(sealer, SectionKind::Persona)?;
        let section = self.section(SectionKind::Persona);
        if plaintext_digest(self.format_version, section.stripe_len, &plain) != section.plain_sha256 {
            return Err(ContainerError::Corrupt("the persona section does not match its digest".into()));
        }
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
        let plain = self.open_section(sealer, SectionKind::Sources)?;
        let section = self.section(SectionKind::Sources);
        if plaintext_digest(self.format_version, section.stripe_len, &plain) != section.plain_sha256 {
            return Err(ContainerError::Corrupt("the sources section does not match its digest".into()));
        }
        let archived = rkyv::access::<crate::schema::ArchivedSourceList, rancor::Error>(&plain)
            .map_err(|_| ContainerError::Corrupt("the sources section is malformed".into()))?;
        rkyv::deserialize::<_, rancor::Error>(archived)
            .map_err(|_| ContainerError::Corrupt("the sources section is malformed".into()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Counts, EmbedderInfo};

    fn header(cipher: Cipher) -> Header {
        Header {
            artifact_version: "t".into(),
            build_id: "00".into(),
            created_unix: 0,
            compiler: "test".into(),
            audience: "public".into(),
            embedder: EmbedderInfo {
                kind: "static".into(),
                id: "m".into(),
                dims: 1,
                vocab_size: 1,
                weights_sha256: [0; 32],
            },
            cipher,
            sources: Vec::new(),
            sections: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn plan(kind: SectionKind, plain: &[u8], encrypt: bool, stripe_len: usize) -> SectionPlan {
        if stripe_len > 0 {
            SectionPlan::striped(kind, plain.to_vec(), stripe_len, encrypt)
        } else {
            SectionPlan::whole(kind, plain.to_vec(), encrypt)
        }
    }

    #[test]
    fn striped_sections_open_in_parallel_and_detect_tampering() {
        let key = Key::from_bytes([5; 32]);
        let index: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let plans = vec![
            plan(SectionKind::Model, b"model", false, 0),
            plan(SectionKind::Index, &index, true, 1000),
            plan(SectionKind::Texts, b"", true, 0),
            plan(SectionKind::Sources, b"", true, 0),
        ];
        let bytes = write_container(header(Cipher::Aes256Gcm { key_id: key.id().0, salt: [1; 16] }), plans, Some(&key));
        let opened = OpenedContainer::open(&bytes).expect("opens");
        assert_eq!(opened.section(SectionKind::Index).stripe_len, 1000);
        let sealer = opened.sealer(Some(&key)).expect("key matches");
        assert_eq!(opened.open_section(sealer.as_ref(), SectionKind::Index).expect("decrypts").as_slice(), &index[..]);
        // A flipped bit in the last stripe is caught.
        let mut bad = bytes.clone();
        let s = opened.section(SectionKind::Index);
        bad[(s.offset + s.stored_len - 3) as usize] ^= 1;
        let reopened = OpenedContainer::open(&bad).expect("structure is intact");
        let sealer = reopened.sealer(Some(&key)).expect("key matches");
        assert!(matches!(reopened.open_section(sealer.as_ref(), SectionKind::Index), Err(ContainerError::Seal(_))));
        assert!(reopened.verify_bytes().is_err());
    }

    #[test]
    fn writing_with_a_key_the_header_does_not_name_is_an_error_not_a_panic() {
        let key = Key::from_bytes([5; 32]);
        let plans = vec![
            plan(SectionKind::Model, b"model", false, 0),
            plan(SectionKind::Index, b"index", true, 0),
            plan(SectionKind::Texts, b"", true, 0),
            plan(SectionKind::Sources, b"", true, 0),
        ];
        let sealed = Container::layout(header(Cipher::Aes256Gcm { key_id: key.id().0, salt: [1; 16] }), plans);
        assert!(sealed.write_to(None, &mut Vec::new()).is_err());
        let mut out = Vec::new();
        sealed.write_to(Some(&key), &mut out).expect("the right key writes");
        assert_eq!(out.len() as u64, sealed.file_len());
        assert!(OpenedContainer::open(&out).expect("opens").verify_bytes().is_ok());
    }

    #[test]
    fn an_absurd_stripe_length_is_refused_when_opening() {
        // A stripe length near u64::MAX would overflow the stripe arithmetic of `open_striped`.
        let key = Key::from_bytes([5; 32]);
        let plans = vec![
            plan(SectionKind::Model, b"model", false, 0),
            SectionPlan::striped(SectionKind::Index, b"index".to_vec(), usize::MAX / 2, true),
            plan(SectionKind::Texts, b"", true, 0),
            plan(SectionKind::Sources, b"", true, 0),
        ];
        let bytes = write_container(header(Cipher::Aes256Gcm { key_id: key.id().0, salt: [1; 16] }), plans, Some(&key));
        assert!(
            matches!(OpenedContainer::open(&bytes), Err(ContainerError::Corrupt(m)) if m.contains("impossible size"))
        );
    }
}
