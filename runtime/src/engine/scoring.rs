//! The dense scoring loops: one query vector against every row of the artifact's table,
//! compiled for several instruction sets and picked at run time.

use format::embed::{dot, dot_i8, quantize};
use rayon::prelude::*;

/// Rows at or above which scoring is split across cores.
const PARALLEL_ROWS: usize = 32_768;

/// Similarity of the unit query `q` to every row of `values` (`rows × dims`, f32), appended
/// to `out`. Compiled for several instruction sets and picked at run time.
pub fn score_rows_f32(values: &[f32], dims: usize, q: &[f32], out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + values.len() / dims.max(1), 0.0);
    let dst = &mut out[start..];
    split(values, dims, dst, |_, rows, dst| rows_f32(rows, dims, q, dst));
}

/// Like [`score_rows_f32`] for int8 rows with per-row scales: `q` is quantised once.
pub fn score_rows_i8(values: &[i8], scales: &[f32], dims: usize, q: &[f32], out: &mut Vec<f32>) {
    let (q8, qscale) = quantize(q);
    let start = out.len();
    out.resize(start + values.len() / dims.max(1), 0.0);
    let dst = &mut out[start..];
    split(values, dims, dst, |first, rows, dst| {
        rows_i8(rows, &scales[first..first + dst.len()], dims, &q8, qscale, dst);
    });
}

/// Run `f(first_row, rows, dst)` over row ranges, on all cores when there are enough rows to
/// pay for them: one range per core, so each runs the vectorised loop over many rows.
fn split<T: Sync>(values: &[T], dims: usize, dst: &mut [f32], f: impl Fn(usize, &[T], &mut [f32]) + Sync) {
    let rows = dst.len();
    let values = &values[..rows * dims];
    if rows < PARALLEL_ROWS || dims == 0 {
        f(0, values, dst);
        return;
    }
    let per = rows.div_ceil(rayon::current_num_threads());
    dst.par_chunks_mut(per)
        .zip(values.par_chunks(per * dims))
        .enumerate()
        .for_each(|(i, (dst, rows))| f(i * per, rows, dst));
}

#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn rows_f32(values: &[f32], dims: usize, q: &[f32], dst: &mut [f32]) {
    for (row, out) in values.chunks_exact(dims).zip(dst) {
        *out = dot(row, q);
    }
}

#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn rows_i8(values: &[i8], scales: &[f32], dims: usize, q: &[i8], qscale: f32, dst: &mut [f32]) {
    for ((row, s), out) in values.chunks_exact(dims).zip(scales).zip(dst) {
        *out = dot_i8(row, q) as f32 * qscale * s;
    }
}
