//! Golden artifacts: one committed artifact per format version must stay readable by the
//! current runtime (like tantivy's `compat_tests`). Each is built from `tests/compat/kb/` with
//! a tiny, deterministic Model2Vec model and the fixed test key.

use std::path::{Path, PathBuf};

use crate::support::*;

const DIMS: usize = 8;

fn compat() -> PathBuf {
    workspace().join("tests/compat")
}

/// Write a real (if tiny) Model2Vec model: BERT WordPiece `tokenizer.json`, an f32
/// `model.safetensors` with deterministic pseudo-random rows, and `config.json`.
pub(crate) fn write_tiny_model(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let words = "[PAD] [UNK] [CLS] [SEP] [MASK] a the of to in and who what where when did you your is was \
                 lighthouse keeper lamp storm night baker bakery harbour northern lights board book books \
                 read winter virginia woolf knot tying tide tables sea kept lit through job work hobby ##s ##ing ##er";
    let vocab: Vec<&str> = words.split_whitespace().collect();
    let entries: Vec<String> = vocab.iter().enumerate().map(|(i, w)| format!("{:?}: {i}", w)).collect();
    let tokenizer = format!(
        r###"{{"version":"1.0","normalizer":{{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}},"pre_tokenizer":{{"type":"BertPreTokenizer"}},"model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{{{}}}}}}}"###,
        entries.join(",")
    );
    std::fs::write(dir.join("tokenizer.json"), tokenizer).expect("write");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "model2vec", "hidden_dim": 8, "normalize": true}"#)
        .expect("write");
    let mut data = Vec::with_capacity(vocab.len() * DIMS * 4);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..vocab.len() * DIMS {
        // xorshift64*: fixed, portable, good enough to make rows distinct.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let x = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let mut header = format!(
        r#"{{"embeddings":{{"dtype":"F32","shape":[{},{DIMS}],"data_offsets":[0,{}]}}}}"#,
        vocab.len(),
        data.len()
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), file).expect("write");
}

#[test]
fn tiny_model_is_reproducible() {
    let tmp = TempDir::new("tiny");
    write_tiny_model(tmp.path());
    for name in ["tokenizer.json", "model.safetensors", "config.json"] {
        let committed = std::fs::read(compat().join("tiny-model").join(name)).expect("committed tiny model");
        assert_eq!(std::fs::read(tmp.path().join(name)).expect("written"), committed, "{name} drifted");
    }
}

/// Every committed golden artifact opens, verifies and answers as it did when it was made.
/// A missing one (only the current version's, right after a format bump) is written here,
/// outside CI, and must then be committed.
fn golden_is_still_readable(version: u32) {
    let golden = compat().join(format!("v{version}/golden.lore"));
    if !golden.exists() {
        assert!(std::env::var_os("CI").is_none(), "{} is missing; it must be committed", golden.display());
        let model = compat().join("tiny-model");
        write_tiny_model(&model);
        std::fs::create_dir_all(golden.parent().expect("dir")).expect("mkdir");
        let r = run(lorec()
            .arg("build")
            .arg(compat().join("kb"))
            .arg("-o")
            .arg(&golden)
            .arg("--model")
            .arg(&model)
            .arg("--no-cache")
            .args(["--artifact-version", &format!("golden-v{version}")])
            // The tiny model is static, where facets are off by default; v5 stores them.
            .args(if version >= 5 { &["--facets", "on"][..] } else { &[] })
            // Reproducible since v3: rebuilding the golden artifact gives the same bytes.
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("LORE_KEY", TEST_KEY));
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let info = run(lorec().arg("inspect").arg(&golden).arg("--json"));
    assert_eq!(info.code, 0, "{}", info.stderr);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("json");
    assert_eq!(info["format_version"], version);
    assert_eq!(info["artifact_version"], format!("golden-v{version}"));
    assert_eq!(info["counts"]["chunks"], 3);
    let verified = run(lorec().arg("verify").arg(&golden).env("LORE_KEY", TEST_KEY));
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    let answer = ask_ranked(&golden, "who kept the lighthouse lamp lit?", 3);
    assert!(answer["on_topic"].is_boolean());
    let hit = &answer["hits"][0];
    assert_eq!(hit["id"], "keeper.yaml#/jobs/0", "{answer}");
    assert_eq!(hit["title"], "Lighthouse keeper at Northern Lights Board");
    assert!(hit["text"].as_str().is_some_and(|t| t.contains("storm of 1987")), "{hit}");
}

/// Version 1 digests each section's concatenated plaintext; `verify` passing here shows the
/// reader still applies that rule to v1 files.
#[test]
fn golden_v1_is_still_readable() {
    golden_is_still_readable(1);
}

/// Version 2: section digests are SHA-256 over the units' digests.
#[test]
fn golden_v2_is_still_readable() {
    golden_is_still_readable(2);
}

/// Version 3: the source list moved from the header into a sealed section, and the model
/// section is hashed in 1 MiB units.
#[test]
fn golden_v3_is_still_readable() {
    golden_is_still_readable(3);
}

/// Version 4: the index's calibration carries the addressing terms; v1–v3 indexes are
/// converted on open.
#[test]
fn golden_v4_is_still_readable() {
    golden_is_still_readable(4);
}

/// Version 5: the index carries facet vectors (several per entity) and their weight; v1–v4
/// indexes are converted on open, without facets.
#[test]
fn golden_v5_is_still_readable() {
    golden_is_still_readable(5);
}

/// Version 6: the optional persona section, from `persona.yaml`, which the chat layer serves.
#[test]
fn golden_v6_is_still_readable_and_serves_its_persona() {
    golden_is_still_readable(6);
    let golden = compat().join("v6/golden.lore");
    let server = crate::serve::Server::start(&golden);
    let (status, body) = server.get("/v1/persona");
    assert_eq!(status, 200, "{body}");
    let persona: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(persona["name"], "The Keeper", "{persona}");
    assert_eq!(persona["openers"], serde_json::json!(["Who kept the lighthouse lamp lit?"]));
    // The persona needs a v6 reader; a file without one stays readable by v5 (docs/format.md).
    let head = std::fs::read(&golden).expect("golden");
    assert_eq!(u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")), 6, "min reader version");
}
