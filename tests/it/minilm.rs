//! The transformer embedder end to end: lorec embeds with all-MiniLM-L6-v2 and stores the
//! model in the artifact; lore (built with `minilm`) embeds questions with it.

use crate::support::*;

pub fn minilm_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("LORE_MINILM_DIR")
        .map(Into::into)
        .unwrap_or_else(|| workspace().join("artifacts/models/all-MiniLM-L6-v2"));
    assert!(dir.join("model.safetensors").exists(), "all-MiniLM-L6-v2 is missing: run `cargo xtask fetch-model`");
    dir
}

#[test]
fn minilm_embedder_builds_and_answers_paraphrases() {
    let tmp = TempDir::new("minilm");
    tmp.write(
        "kb/jobs.yaml",
        "jobs:\n  - title: Lighthouse keeper\n    duties: kept the lamp burning through winter storms\n  - title: Harbour baker\n    duties: baked rye bread for the fishing fleet at dawn\n",
    );
    let out = tmp.path().join("kb.lore");
    let r = run(lorec()
        .arg("build")
        .arg(tmp.path().join("kb"))
        .arg("-o")
        .arg(&out)
        .args(["--embedder", "minilm", "--no-cache"])
        .arg("--model")
        .arg(minilm_dir())
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info: serde_json::Value =
        serde_json::from_str(&run(lorec().arg("inspect").arg(&out).arg("--json")).stdout).expect("json");
    assert_eq!(info["embedder"]["id"], "sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(info["embedder"]["dims"], 384);
    // A paraphrase with no word in common with the answer.
    let answer = ask_ranked(&out, "Who made loaves for the boats early in the morning?", 2);
    assert_eq!(answer["hits"][0]["id"], "jobs.yaml#/jobs/1", "{answer}");
}
