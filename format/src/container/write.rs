//! Writing an artifact: sections planned by the compiler, laid out at fixed offsets under a
//! final header, then sealed, hashed and streamed to a sink in one pass.

use std::io::Write;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use sha2::{Digest, Sha256};

use super::digest::{digest_header, section_digest, stripe_digests};
use super::{FLAG_SEALED, PREAMBLE_LEN, SECTION_ALIGN, TRAILER_LEN, TRAILER_MAGIC, stored_len};
use crate::schema::{Cipher, Compression, Header, Section, SectionKind};
use crate::seal::{Key, Sealer, TAG_LEN};
use crate::{FORMAT_VERSION, MAGIC, MIN_READER_VERSION, PERSONA_MIN_READER_VERSION};

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

/// Sealing threads for [`Container::write_to`]. Its units are sealed by a pool of its own, not
/// rayon's: they must reach the writer in file order, and these threads take them in that
/// order from a shared counter, where rayon would seal them in any order and the units waiting
/// to be written would pile up (sealing in batches instead measured 15 to 50% slower writes).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
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
