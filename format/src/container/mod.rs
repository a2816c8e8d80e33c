//! The artifact container: preamble, header, aligned sections, trailer. See `docs/format.md`.
//!
//! Opening is cheap and checks structure only: magic, versions, the header's own digest, and
//! that every section lies inside the file. Sections are decrypted lazily by the caller;
//! [`OpenedContainer::verify`] is the full check that reads every byte.
//!
//! `write` lays an artifact out and streams it, `read` opens one and its sections, and
//! `digest` holds the section digests as each format version defines them, which both sides
//! compute.

mod digest;
mod read;
mod write;

pub use digest::{SectionHasher, plaintext_digest, section_digest, stripe_digests};
pub use read::{OpenedContainer, SectionData, open_unit};
pub use write::{Container, SectionPlan, UnitSpan, write_container};

use crate::seal::{KeyId, SealError, TAG_LEN};

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

/// Bytes a block of `len` occupies on disk.
pub fn stored_len(len: usize, encrypt: bool) -> usize {
    if encrypt { len + TAG_LEN } else { len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Cipher, Counts, EmbedderInfo, Header, SectionKind};
    use crate::seal::Key;

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
