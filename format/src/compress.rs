//! zstd compression of sections and text blocks (pure Rust, via `ruzstd`).

use std::io::Read as _;

use ruzstd::decoding::StreamingDecoder;
use ruzstd::encoding::{CompressionLevel, compress_to_vec};

/// Largest plaintext of one compressed unit (a text block). lorec packs blocks of about
/// 16 KiB; the bound keeps a crafted block from decoding into gigabytes ("zstd bomb").
pub const MAX_COMPRESSED_UNIT_LEN: usize = 16 << 20;

/// Compress `data` into one zstd frame.
pub fn zstd_compress(data: &[u8]) -> Vec<u8> {
    compress_to_vec(data, CompressionLevel::Fastest)
}

/// Decompress one zstd frame whose decoded size must be exactly `plain_len`, at most
/// [`MAX_COMPRESSED_UNIT_LEN`].
///
/// The claimed size is checked before anything is allocated and decoding stops one byte past
/// it, so neither a false size nor a frame that expands further can take more memory than the
/// bound: the size is only authenticated in sealed artifacts.
pub fn zstd_decompress(frame: &[u8], plain_len: usize) -> Result<Vec<u8>, String> {
    if plain_len > MAX_COMPRESSED_UNIT_LEN {
        return Err(format!("a compressed unit claims {plain_len} bytes; the limit is {MAX_COMPRESSED_UNIT_LEN}"));
    }
    let mut input = frame;
    let decoder = StreamingDecoder::new(&mut input).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(plain_len);
    decoder.take(plain_len as u64 + 1).read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() != plain_len {
        return Err(format!("decoded {} bytes where the header promises {plain_len}", out.len()));
    }
    Ok(out)
}

/// Whether compressing paid for itself: it must save at least 1/16 of the input (and the
/// input must be within what a reader decompresses, [`MAX_COMPRESSED_UNIT_LEN`]).
pub fn worth_it(plain: usize, compressed: usize) -> bool {
    plain <= MAX_COMPRESSED_UNIT_LEN && compressed + plain / 16 < plain
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

    #[test]
    fn a_claimed_size_over_the_limit_is_refused_before_allocating() {
        let z = zstd_compress(b"hello hello hello");
        let err = zstd_decompress(&z, 0xFF00_0088).expect_err("over the limit");
        assert!(err.contains("the limit"), "{err}");
    }

    #[test]
    fn a_frame_that_expands_past_its_claimed_size_stops_there() {
        let big = vec![b'a'; 1 << 20];
        let z = zstd_compress(&big);
        assert!(zstd_decompress(&z, 1000).is_err());
    }
}
