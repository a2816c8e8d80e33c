//! Ids and embeddings against Python sentence-transformers (`tests/data/minilm_reference.json`).
//!
//! Needs the real model: `LORE_MINILM_DIR` must name a sentence-transformers
//! all-MiniLM-L6-v2 directory (config.json, tokenizer.json, model.safetensors). These tests fail,
//! never skip, when it is unset or wrong.

use std::path::PathBuf;
use std::sync::OnceLock;

use embed_minilm::MiniLm;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Cosine similarity every vector must reach against the reference.
const MIN_COSINE: f64 = 0.9999;
/// Largest allowed difference of any one component.
const MAX_ABS_DIFF: f32 = 1e-4;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("LORE_MINILM_DIR").unwrap_or_else(|| {
        panic!(
            "LORE_MINILM_DIR is not set: point it at a sentence-transformers all-MiniLM-L6-v2 \
             directory (config.json, tokenizer.json, model.safetensors) to run the MiniLM reference tests"
        )
    });
    let dir = PathBuf::from(dir);
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(dir.join(file).is_file(), "LORE_MINILM_DIR={}: {file} is missing", dir.display());
    }
    dir
}

fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        MiniLm::from_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
    })
}

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let doc: Value = serde_json::from_str(include_str!("data/minilm_reference.json")).expect("reference JSON");
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_owned(),
            ids: c["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect(),
            embedding: c["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("x") as f32)
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

#[test]
fn weights_are_the_reference_model() {
    let doc: Value = serde_json::from_str(include_str!("data/minilm_reference.json")).expect("reference JSON");
    let expected = doc["model_safetensors_sha256"].as_str().expect("sha256");
    assert!(expected.starts_with("53aa5117"), "reference made with unexpected weights {expected}");
    let path = model_dir().join("model.safetensors");
    let weights = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let actual = format::text::hex(&Sha256::digest(&weights));
    assert_eq!(actual, expected, "{} is not the all-MiniLM-L6-v2 the reference was made with", path.display());
}

#[test]
fn token_ids_match_the_python_tokenizer() {
    let model = model();
    for case in reference() {
        assert_eq!(model.token_ids(&case.text), case.ids, "ids of {:?}", short(&case.text));
    }
}

#[test]
fn embeddings_match_sentence_transformers() {
    let model = model();
    assert_eq!(model.dims(), 384);
    let cases = reference();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batched = model.embed(&texts).expect("embed batch");
    let mut failures = Vec::new();
    for (case, got) in cases.iter().zip(&batched) {
        assert_eq!(got.len(), 384);
        let single = model.embed(&[&case.text]).expect("embed one");
        for (how, v) in [("batched", got), ("alone", &single[0])] {
            let (cos, diff) = (cosine(v, &case.embedding), max_abs_diff(v, &case.embedding));
            eprintln!("{how:>7} cos={cos:.9} max|Δ|={diff:.2e} {:?}", short(&case.text));
            if cos < MIN_COSINE || diff > MAX_ABS_DIFF {
                failures.push(format!("{how} {:?}: cosine {cos:.6}, max |Δ| {diff:.2e}", short(&case.text)));
            }
        }
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    }
    assert!(failures.is_empty(), "differs from sentence-transformers:\n{}", failures.join("\n"));
}

#[test]
fn from_parts_equals_from_dir() {
    let dir = model_dir();
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let parts = MiniLm::from_parts(&read("config.json"), &read("tokenizer.json"), &read("model.safetensors"))
        .expect("from_parts");
    let text = ["How do I reset my password?"];
    assert_eq!(parts.embed(&text).expect("embed"), model().embed(&text).expect("embed"));
}

#[test]
fn empty_batch_is_empty() {
    assert!(model().embed(&[]).expect("embed").is_empty());
}
