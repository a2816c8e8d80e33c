//! Merging: the compiled units joined, in source order, into one index (chunks, BM25
//! postings, dense vectors) and one run of text blocks.

use format::container::{UnitSpan, stored_len};
use format::{BlockRef, Calibration, ChunkRef, DenseVectors, Index};

use crate::unit::{Unit, UnitVectors, VectorFormat};

/// Units joined into one index, with the text blocks ready to seal.
pub(super) struct Merged {
    pub(super) index: Index,
    pub(super) texts: Vec<u8>,
    pub(super) text_units: Vec<UnitSpan>,
    pub(super) texts_plain_len: u64,
}

/// Join units in source order: chunk numbers, block offsets and BM25 term ids become global,
/// and postings stay sorted by chunk within each term.
pub(super) fn merge(
    units: &[&Unit],
    format: VectorFormat,
    dims: usize,
    encrypt: bool,
    calibration: Calibration,
    fusion: format::FusionParams,
    facet_weight: f32,
) -> Merged {
    let total_chunks: usize = units.iter().map(|u| u.chunks()).sum();
    let mut refs = Vec::with_capacity(total_chunks);
    let mut block_refs = Vec::new();
    let mut text_units = Vec::new();
    let mut texts = Vec::with_capacity(units.iter().flat_map(|u| &u.blocks).map(|b| b.stored.len()).sum());
    let mut texts_offset = 0u64;
    let mut texts_plain_len = 0u64;
    let mut chunk_lens = Vec::with_capacity(total_chunks);
    let mut f32s = Vec::new();
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    let mut facet_chunks = Vec::new();
    let mut facet_f32s = Vec::new();
    let (mut facet_values, mut facet_scales) = (Vec::new(), Vec::new());
    // Filled in source order with a fixed hasher, so equal units give equal archived bytes.
    let mut terms = format::IdMap::default();
    let mut remaps: Vec<Vec<u32>> = Vec::with_capacity(units.len());
    let mut postings_per_term: Vec<u32> = Vec::new();
    // Sources without chunks are not listed (see `build`), so chunk source numbers skip them.
    let mut source = 0u32;
    for unit in units {
        for block in &unit.blocks {
            let block_no = block_refs.len() as u32;
            refs.extend((0..block.chunks).map(|slot| ChunkRef { source, block: block_no, slot }));
            let len = stored_len(block.stored.len(), encrypt);
            block_refs.push(BlockRef {
                offset: texts_offset,
                stored_len: len as u32,
                plain_len: block.plain_len,
                compression: block.compression,
            });
            texts_offset += len as u64;
            texts_plain_len += u64::from(block.plain_len);
            texts.extend_from_slice(&block.stored);
            text_units.push(UnitSpan { len: block.stored.len(), plain_sha256: block.plain_sha256 });
        }
        chunk_lens.extend_from_slice(&unit.chunk_lens);
        match (&unit.vectors, format) {
            (UnitVectors::F32(v), VectorFormat::F32) => f32s.extend_from_slice(v),
            (UnitVectors::I8 { values: v, scales: s }, VectorFormat::I8) => {
                values.extend_from_slice(v);
                scales.extend_from_slice(s);
            }
            _ => unreachable!("units are cached per vector format"),
        }
        match (&unit.facet_vectors, format) {
            (UnitVectors::F32(v), VectorFormat::F32) => facet_f32s.extend_from_slice(v),
            (UnitVectors::I8 { values: v, scales: s }, VectorFormat::I8) => {
                facet_values.extend_from_slice(v);
                facet_scales.extend_from_slice(s);
            }
            _ => unreachable!("units are cached per vector format"),
        }
        let first_chunk = (chunk_lens.len() - unit.chunks()) as u32;
        for (c, &n) in unit.facet_counts.iter().enumerate() {
            facet_chunks.extend(std::iter::repeat_n(first_chunk + c as u32, n as usize));
        }
        let remap: Vec<u32> = unit
            .terms
            .iter()
            .map(|term| {
                let next = terms.len() as u32;
                *terms.entry(term.clone()).or_insert_with(|| {
                    postings_per_term.push(0);
                    next
                })
            })
            .collect();
        for &local in &unit.chunk_terms {
            postings_per_term[remap[local as usize] as usize] += 1;
        }
        remaps.push(remap);
        if unit.chunks() > 0 || unit.chunks_found == 0 {
            source += 1;
        }
    }
    let mut term_starts = Vec::with_capacity(postings_per_term.len() + 1);
    let mut at = 0u32;
    for &n in &postings_per_term {
        term_starts.push(at);
        at += n;
    }
    term_starts.push(at);
    let mut cursor = term_starts.clone();
    let mut posting_chunks = vec![0u32; at as usize];
    let mut posting_tfs = vec![0u16; at as usize];
    let mut chunk_base = 0u32;
    for (unit, remap) in units.iter().zip(&remaps) {
        for c in 0..unit.chunks() {
            let (from, to) = (unit.chunk_term_starts[c] as usize, unit.chunk_term_starts[c + 1] as usize);
            for k in from..to {
                let term = remap[unit.chunk_terms[k] as usize] as usize;
                let slot = cursor[term] as usize;
                posting_chunks[slot] = chunk_base + c as u32;
                posting_tfs[slot] = unit.chunk_tfs[k];
                cursor[term] += 1;
            }
        }
        chunk_base += unit.chunks() as u32;
    }
    let avg_chunk_len = if chunk_lens.is_empty() {
        0.0
    } else {
        chunk_lens.iter().map(|&l| l as f32).sum::<f32>() / chunk_lens.len() as f32
    };
    let (vectors, facet_vectors) = match format {
        VectorFormat::F32 => (DenseVectors::F32(f32s), DenseVectors::F32(facet_f32s)),
        VectorFormat::I8 => {
            (DenseVectors::I8 { values, scales }, DenseVectors::I8 { values: facet_values, scales: facet_scales })
        }
    };
    let index = Index {
        chunks: refs,
        blocks: block_refs,
        terms,
        term_starts,
        posting_chunks,
        posting_tfs,
        chunk_lens,
        avg_chunk_len,
        dims: dims as u32,
        vectors,
        facet_chunks,
        facet_vectors,
        facet_weight,
        calibration,
        fusion,
    };
    Merged { index, texts, text_units, texts_plain_len }
}
