//! Section digests as each format version defines them: the writer records them in the
//! header, the reader and `lorec verify` recompute them.

use rayon::prelude::*;
use sha2::{Digest, Sha256};

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
    bytes.par_chunks(stripe_len.max(1)).map(|piece| Sha256::digest(piece).into()).collect()
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

/// The header digest covers the first 24 preamble bytes (magic, versions, header length,
/// flags) and the header itself, so sealing binds all of them.
pub(super) fn digest_header(preamble: &[u8], header: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(&preamble[..24]).chain_update(header).finalize().into()
}
