//! Model2Vec static embeddings: WordPiece ids → mean of table rows → L2 normalisation.
//!
//! One implementation serves both sides: the compiler embeds chunks with an owned
//! [`ModelTable`], the runtime embeds questions with the archived one inside the artifact.

use crate::schema::v1::ArchivedModelTable as ArchivedModelTableV1;
use crate::schema::{ArchivedModelTable, ArchivedTableRows, ModelTable, TableRows};
use crate::wordpiece::{WordPieceConfig, tokenize};

/// What pooling needs from a model table, owned or archived.
pub trait TokenTable {
    fn config(&self) -> WordPieceConfig<'_>;
    fn lookup(&self, piece: &str) -> Option<u32>;
    fn dims(&self) -> usize;
    fn max_tokens(&self) -> usize;
    fn truncate_chars(&self) -> usize;
    fn normalize(&self) -> bool;
    /// Add row `id` to `acc`; ids outside the table are ignored.
    fn add_row(&self, id: u32, acc: &mut [f32]);
    /// Whether the rows fit `dims` (checked once when an artifact opens).
    fn rows_consistent(&self) -> bool;
}

impl TokenTable for ModelTable {
    fn config(&self) -> WordPieceConfig<'_> {
        WordPieceConfig {
            lowercase: self.lowercase,
            strip_accents: self.strip_accents,
            continuing_prefix: &self.continuing_prefix,
            max_input_chars_per_word: self.max_input_chars_per_word as usize,
            unk_id: self.unk_id,
        }
    }
    fn lookup(&self, piece: &str) -> Option<u32> {
        self.vocab.get(piece).copied()
    }
    fn dims(&self) -> usize {
        self.dims as usize
    }
    fn max_tokens(&self) -> usize {
        self.max_tokens as usize
    }
    fn truncate_chars(&self) -> usize {
        self.truncate_chars as usize
    }
    fn normalize(&self) -> bool {
        self.normalize
    }
    fn add_row(&self, id: u32, acc: &mut [f32]) {
        let (d, at) = (acc.len(), id as usize);
        match &self.rows {
            TableRows::F32(v) => {
                if let Some(row) = v.get(at * d..(at + 1) * d) {
                    acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
                }
            }
            TableRows::I8 { values, scales } => {
                if let (Some(row), Some(&scale)) = (values.get(at * d..(at + 1) * d), scales.get(at)) {
                    acc.iter_mut().zip(row).for_each(|(a, &r)| *a += f32::from(r) * scale);
                }
            }
        }
    }
    fn rows_consistent(&self) -> bool {
        let d = (self.dims as usize).max(1);
        match &self.rows {
            TableRows::F32(v) => v.len().is_multiple_of(d),
            TableRows::I8 { values, scales } => values.len() == scales.len() * d,
        }
    }
}

impl ModelTable {
    /// Store the rows as int8 with one scale per row (see [`quantize`]).
    pub fn quantize_rows(&mut self) {
        let d = self.dims as usize;
        if let TableRows::F32(v) = &self.rows {
            let mut values = Vec::with_capacity(v.len());
            let mut scales = Vec::with_capacity(v.len() / d.max(1));
            for row in v.chunks_exact(d.max(1)) {
                let (q, scale) = quantize(row);
                values.extend_from_slice(&q);
                scales.push(scale);
            }
            self.rows = TableRows::I8 { values, scales };
        }
    }
}

/// The parts of [`TokenTable`] that read an archived table the same way in every format version.
macro_rules! archived_table_common {
    () => {
        fn config(&self) -> WordPieceConfig<'_> {
            WordPieceConfig {
                lowercase: self.lowercase,
                strip_accents: self.strip_accents,
                continuing_prefix: self.continuing_prefix.as_str(),
                max_input_chars_per_word: self.max_input_chars_per_word.to_native() as usize,
                unk_id: self.unk_id.to_native(),
            }
        }
        fn lookup(&self, piece: &str) -> Option<u32> {
            self.vocab.get(piece).map(|id| id.to_native())
        }
        fn dims(&self) -> usize {
            self.dims.to_native() as usize
        }
        fn max_tokens(&self) -> usize {
            self.max_tokens.to_native() as usize
        }
        fn truncate_chars(&self) -> usize {
            self.truncate_chars.to_native() as usize
        }
        fn normalize(&self) -> bool {
            self.normalize
        }
    };
}

impl TokenTable for ArchivedModelTable {
    archived_table_common!();
    fn add_row(&self, id: u32, acc: &mut [f32]) {
        let (d, at) = (acc.len(), id as usize);
        match &self.rows {
            ArchivedTableRows::F32(v) => {
                if let Some(row) = v.get(at * d..(at + 1) * d) {
                    acc.iter_mut().zip(row).for_each(|(a, r)| *a += r.to_native());
                }
            }
            ArchivedTableRows::I8 { values, scales } => {
                if let (Some(row), Some(scale)) = (values.get(at * d..(at + 1) * d), scales.get(at)) {
                    let scale = scale.to_native();
                    acc.iter_mut().zip(row).for_each(|(a, &r)| *a += f32::from(r) * scale);
                }
            }
        }
    }
    fn rows_consistent(&self) -> bool {
        self.rows.is_consistent(self.dims.to_native() as usize)
    }
}

impl TokenTable for ArchivedModelTableV1 {
    archived_table_common!();
    fn add_row(&self, id: u32, acc: &mut [f32]) {
        let d = acc.len();
        if let Some(row) = self.embeddings.get(id as usize * d..(id as usize + 1) * d) {
            acc.iter_mut().zip(row).for_each(|(a, r)| *a += r.to_native());
        }
    }
    fn rows_consistent(&self) -> bool {
        self.embeddings.len().is_multiple_of((self.dims.to_native() as usize).max(1))
    }
}

/// A model section of any readable format version, as the runtime uses it.
pub enum ModelRef<'a> {
    Static(&'a dyn TokenTable),
    Transformer(&'a crate::schema::ArchivedTransformerParts),
    Remote(&'a crate::schema::ArchivedRemoteEmbedder),
}

impl<'a> ModelRef<'a> {
    pub fn from_current(model: &'a crate::schema::ArchivedEmbedderModel) -> ModelRef<'a> {
        use crate::schema::ArchivedEmbedderModel as M;
        match model {
            M::Static(table) => ModelRef::Static(table),
            M::Transformer(parts) => ModelRef::Transformer(parts),
            M::Remote(remote) => ModelRef::Remote(remote),
        }
    }

    pub fn from_v1(model: &'a crate::schema::v1::ArchivedEmbedderModel) -> ModelRef<'a> {
        use crate::schema::v1::ArchivedEmbedderModel as M;
        match model {
            M::Static(table) => ModelRef::Static(table),
            M::Transformer(parts) => ModelRef::Transformer(parts),
            M::Remote(remote) => ModelRef::Remote(remote),
        }
    }
}

/// Check a model section written as `format_version` (rkyv validation, in place).
pub fn check_model_section(bytes: &[u8], format_version: u32) -> Result<(), String> {
    use rkyv::rancor;
    let result = if format_version < 2 {
        rkyv::access::<crate::schema::v1::ArchivedEmbedderModel, rancor::Error>(bytes).map(|_| ())
    } else {
        rkyv::access::<crate::schema::ArchivedEmbedderModel, rancor::Error>(bytes).map(|_| ())
    };
    // rancor's own text names its internals and suggests enabling debug assertions; what a
    // user needs is that the bytes are damaged.
    result
        .map_err(|_| "its bytes are not a valid model (the artifact is damaged; run `lorec verify` on it)".to_string())
}

/// Token ids as Model2Vec pools them: the text cut to `truncate_chars` characters, the ids
/// cut to `max_tokens`, and only then unknown pieces dropped (the reference library's order).
pub fn token_ids(table: &(impl TokenTable + ?Sized), text: &str) -> Vec<u32> {
    let cfg = table.config();
    let cut = match text.char_indices().nth(table.truncate_chars()) {
        Some((at, _)) => &text[..at],
        None => text,
    };
    let mut ids = tokenize(cut, &cfg, |p| table.lookup(p));
    ids.truncate(table.max_tokens());
    ids.retain(|&id| id != cfg.unk_id);
    ids
}

/// Embed `text`. A text with no known token embeds to the zero vector.
pub fn embed(table: &(impl TokenTable + ?Sized), text: &str) -> Vec<f32> {
    let ids = token_ids(table, text);
    let mut acc = vec![0f32; table.dims()];
    for &id in &ids {
        table.add_row(id, &mut acc);
    }
    let denom = ids.len().max(1) as f32;
    acc.iter_mut().for_each(|x| *x /= denom);
    if table.normalize() {
        normalize_in_place(&mut acc);
    }
    acc
}

/// Scale `v` to unit length (a zero vector stays zero).
pub fn normalize_in_place(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Dot product; vectors are unit length, so this is the cosine similarity. Always inlined, so
/// the multiversioned row loops compile it for their instruction set.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without reassociating floats.
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Symmetric int8 quantisation of one vector: `v ≈ scale × q`.
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    (v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

/// Integer dot product of two int8 vectors. Always inlined, so the multiversioned row loops
/// compile it for their instruction set.
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // i16 products summed in i32 lanes: the shape compilers turn into pmaddwd.
    let mut acc = [0i32; 16];
    let chunks_a = a.chunks_exact(16);
    let chunks_b = b.chunks_exact(16);
    let tail: i32 =
        chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..16 {
            acc[i] += i32::from(i16::from(ca[i]) * i16::from(cb[i]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_dot_tracks_f32_dot() {
        let a: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let b: Vec<f32> = (0..256).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
        let (qa, sa) = quantize(&a);
        let (qb, sb) = quantize(&b);
        let approx = dot_i8(&qa, &qb) as f32 * sa * sb;
        let exact = dot(&a, &b);
        assert!((approx - exact).abs() < 0.01 * exact.abs().max(1.0), "{approx} vs {exact}");
        assert_eq!(quantize(&[0.0, 0.0]), (vec![0, 0], 0.0));
    }
}
