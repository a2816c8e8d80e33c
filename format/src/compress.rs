//! zstd compression of sections and text blocks (pure Rust, via `ruzstd`).

use ruzstd::decoding::FrameDecoder;
use ruzstd::encoding::{CompressionLevel, compress_to_vec};

/// Compress `data` into one zstd frame.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    compress_to_vec(data, CompressionLevel::Fastest)
}

/// Decompress one zstd frame whose decoded size is known to be exactly `plain_len`.
///
/// The expected size comes from the (authenticated) header, so the output buffer is allocated
/// once and a frame that decodes to any other size is rejected.
pub fn zstd_decompress(frame: &[u8], plain_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(plain_len);
    let mut decoder = FrameDecoder::new();
    decoder.decode_all_to_vec(frame, &mut out).map_err(|e| e.to_string())?;
    if out.len() != plain_len {
        return Err(format!("decoded {} bytes where the header promises {plain_len}", out.len()));
    }
    Ok(out)
}

/// Whether compressing paid for itself: it must save at least 1/16 of the input.
pub fn worth_it(plain: usize, compressed: usize) -> bool {
    compressed + plain / 16 < plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(200);
        let z = zstd_compress(text.as_bytes());
        assert!(worth_it(text.len(), z.len()));
        assert_eq!(zstd_decompress(&z, text.len()).expect("decompresses"), text.as_bytes());
    }

    #[test]
    fn wrong_length_is_an_error() {
        let z = zstd_compress(b"hello hello hello");
        assert!(zstd_decompress(&z, 3).is_err());
        assert!(zstd_decompress(b"not zstd at all", 10).is_err());
    }
}
