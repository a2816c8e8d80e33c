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

    /// A public fingerprint of the key, stored in the header so a wrong key is reported as
    /// such instead of as tampering.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new().chain_update(b"lore key id v1\0").chain_update(self.0).finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
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

/// Read a key the way both binaries take it: `LORE_KEY` (base64) wins over `LORE_KEY_FILE`.
pub fn load_key(base64: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<Key>, String> {
    if let Some(text) = base64.filter(|t| !t.trim().is_empty()) {
        return Key::from_base64(text).map(Some).map_err(|e| format!("LORE_KEY: {e}"));
    }
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        return Key::from_base64(&text).map(Some).map_err(|e| format!("key file {}: {e}", path.display()));
    }
    Ok(None)
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
