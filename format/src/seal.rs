//! AES-256-GCM sealing of sections and blocks, and the user's key.
//!
//! One user key seals many builds. Each build draws a random 16-byte salt and derives its own
//! AES key with HKDF-SHA256, so nonces only need to be unique within one build: they are the
//! section tag and the block number. Every seal binds the header digest as associated data, so
//! changing any header byte makes every section fail to open.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

/// Bytes a seal adds to its plaintext (the GCM tag).
pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the key is not valid base64 ({0})")]
    Base64(String),
    #[error("the key must be 32 bytes, this one decodes to {0} bytes")]
    Length(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "{what} failed authentication: the artifact was modified after it was built, or it was sealed with another key"
    )]
    Tampered { what: String },
}

/// A 32-byte user key. Its `Debug` output never shows the bytes.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(id {})", self.id())
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// Parse the base64 form that `lorec keygen` prints (surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Key, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Key(arr))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A key for another purpose (e.g. sealing conversation memory), derived with HKDF-SHA256
    /// so that neither key reveals the other and the artifact key is never used for it as is.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit; expand cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(b"lore derived key v1"), &self.0).expand(purpose.as_bytes(), &mut out);
        out
    }

    /// A public fingerprint of the key, stored in the header so a wrong key is reported as
    /// such instead of as tampering.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new().chain_update(b"lore key id v1\0").chain_update(self.0).finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

/// The salt of a reproducible build: a pseudo-random function of the key and the artifact's
/// content (HKDF-SHA256 with the content digest as salt), instead of random bytes. Equal
/// content under one key gives equal bytes; any difference in content gives another salt, so
/// another build key, so no nonce is ever reused under one build key for different
/// plaintexts. Without the key the salt reveals nothing about the content.
pub fn derived_salt(key: &Key, content_digest: &[u8; 32]) -> [u8; 16] {
    let hk = Hkdf::<Sha256>::new(Some(content_digest), &key.0);
    let mut salt = [0u8; 16];
    hk.expand(b"lore reproducible salt v1", &mut salt).expect("16 bytes is a valid HKDF-SHA256 output length");
    salt
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The per-build cipher, bound to one header.
pub struct Sealer {
    cipher: Aes256Gcm,
    header_digest: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &Key, salt: &[u8; 16], header_digest: [u8; 32]) -> Sealer {
        let hk = Hkdf::<Sha256>::new(Some(salt), &key.0);
        let mut build_key = [0u8; 32];
        hk.expand(b"lore artifact v1 aes-256-gcm", &mut build_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let cipher = Aes256Gcm::new_from_slice(&build_key).expect("AES-256 takes a 32-byte key");
        Sealer { cipher, header_digest }
    }

    fn nonce_and_aad(&self, section: u32, block: u64) -> ([u8; 12], [u8; 44]) {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&section.to_le_bytes());
        nonce[4..].copy_from_slice(&block.to_le_bytes());
        let mut aad = [0u8; 44];
        aad[..32].copy_from_slice(&self.header_digest);
        aad[32..].copy_from_slice(&nonce);
        (nonce, aad)
    }

    /// Encrypt one unit; the output is `plain.len() + TAG_LEN` bytes.
    #[cfg(test)]
    pub fn seal(&self, section: u32, block: u64, plain: &[u8]) -> Vec<u8> {
        let (nonce, aad) = self.nonce_and_aad(section, block);
        self.cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
    }

    /// Encrypt one unit in place and return its tag, which is stored right after it.
    pub fn seal_in_place(&self, section: u32, block: u64, buf: &mut [u8]) -> [u8; TAG_LEN] {
        let (nonce, aad) = self.nonce_and_aad(section, block);
        self.cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, buf)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
            .into()
    }

    /// Decrypt and authenticate one unit in place: `buf` holds the ciphertext without its tag.
    pub fn open_in_place(
        &self,
        section: u32,
        block: u64,
        buf: &mut [u8],
        tag: &[u8],
        what: &str,
    ) -> Result<(), SealError> {
        let (nonce, aad) = self.nonce_and_aad(section, block);
        if tag.len() != TAG_LEN {
            return Err(SealError::Tampered { what: what.to_string() });
        }
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, buf, aes_gcm::Tag::from_slice(tag))
            .map_err(|_| SealError::Tampered { what: what.to_string() })
    }

    /// Decrypt and authenticate one unit.
    pub fn open(&self, section: u32, block: u64, sealed: &[u8], what: &str) -> Result<Vec<u8>, SealError> {
        let (nonce, aad) = self.nonce_and_aad(section, block);
        self.cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| SealError::Tampered { what: what.to_string() })
    }
}

/// A key as loaded, with anything the user should be warned about.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: Key,
    /// Set when the key came from a file that others can read.
    pub warning: Option<String>,
}

/// Read a key the way both binaries take it: `LORE_KEY` (base64) wins over `LORE_KEY_FILE`.
/// The file must be a regular file of at most [`crate::fsio::MAX_KEY_FILE_BYTES`]; a key file
/// readable by its group or by everyone loads, with a warning.
pub fn load_key(base64: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<LoadedKey>, String> {
    if let Some(text) = base64.filter(|t| !t.trim().is_empty()) {
        return Key::from_base64(text)
            .map(|key| Some(LoadedKey { key, warning: None }))
            .map_err(|e| format!("LORE_KEY: {e}"));
    }
    let Some(path) = file else { return Ok(None) };
    let (bytes, meta) = crate::fsio::read_regular_with_metadata(path, crate::fsio::MAX_KEY_FILE_BYTES)
        .map_err(|e| format!("key file: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        format!("key file {}: not text; a key file holds the base64 line `lorec keygen` prints", path.display())
    })?;
    let key = Key::from_base64(text).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let warning = crate::fsio::loose_permissions(&meta).map(|why| format!("key file {} is {why}", path.display()));
    Ok(Some(LoadedKey { key, warning }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_base64_and_hides_in_debug() {
        let key = Key::from_bytes([7u8; 32]);
        let text = key.to_base64();
        let again = Key::from_base64(&format!("  {text}\n")).expect("round trip");
        assert_eq!(again.id(), key.id());
        assert!(!format!("{key:?}").contains(&text));
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        assert!(matches!(Key::from_base64("not base64!!"), Err(KeyError::Base64(_))));
        assert!(matches!(Key::from_base64("AAAA"), Err(KeyError::Length(3))));
    }

    #[test]
    fn seal_binds_header_position_and_key() {
        let key = Key::from_bytes([1u8; 32]);
        let salt = [2u8; 16];
        let sealer = Sealer::new(&key, &salt, [3u8; 32]);
        let sealed = sealer.seal(2, 5, b"secret text");
        assert_eq!(sealed.len(), 11 + TAG_LEN);
        assert_eq!(sealer.open(2, 5, &sealed, "x").expect("opens"), b"secret text");
        // Another block position, another header, another key, a flipped bit: all refused.
        assert!(sealer.open(2, 6, &sealed, "x").is_err());
        assert!(Sealer::new(&key, &salt, [4u8; 32]).open(2, 5, &sealed, "x").is_err());
        assert!(Sealer::new(&Key::from_bytes([9u8; 32]), &salt, [3u8; 32]).open(2, 5, &sealed, "x").is_err());
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert!(sealer.open(2, 5, &flipped, "x").is_err());
    }
}
