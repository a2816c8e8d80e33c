//! The hub client against a loopback server that answers as the hub does: HEAD with
//! `X-Repo-Commit` and ETags, LFS files redirected to a CDN path, 401 and 404.

use sha2::{Digest as _, Sha256};

use super::*;
use crate::testserver::{Answer, Server};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const NEXT_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// Serve `files` of `org/model` at `revision` and at `commit`: the first file as an LFS file
/// (302 to /cdn/, ETag its SHA-256), the rest as plain git files (ETag a git-like id).
fn serve(server: &Server, revision: &str, commit: &str, files: &[(&str, &[u8])]) {
    for (i, (name, body)) in files.iter().enumerate() {
        for at in [revision, commit] {
            let path = format!("/org/model/resolve/{}/{name}", at.replace('/', "%2F"));
            if i == 0 {
                let sha = hex::encode(Sha256::digest(body));
                let cdn = format!("/cdn/{sha}");
                server.route(
                    "HEAD",
                    &path,
                    Answer::status(302)
                        .header("Location", &cdn)
                        .header("X-Repo-Commit", commit)
                        .header("X-Linked-Etag", &format!("\"{sha}\""))
                        .header("X-Linked-Size", &body.len().to_string()),
                );
                server.route("GET", &cdn, Answer::ok(body.to_vec()));
            } else {
                let etag = format!("{:040x}", i + commit.len() + commit.as_bytes()[0] as usize);
                let answer =
                    Answer::ok(body.to_vec()).header("X-Repo-Commit", commit).header("ETag", &format!("W/\"{etag}\""));
                server.route("HEAD", &path, answer.clone());
                server.route("GET", &path, answer);
            }
        }
    }
}

const FILES: [(&str, &[u8]); 3] =
    [("model.safetensors", b"weights v1"), ("tokenizer.json", b"{\"model\":{}}"), ("config.json", b"{}")];

#[test]
fn a_model_is_fetched_into_the_hubs_cache_layout_and_read_back_offline() {
    let server = Server::start();
    serve(&server, "main", COMMIT, &FILES);
    let cache = tempfile::tempdir().expect("cache");
    let hub = Hub::new(&server.base, cache.path());
    let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    let dir = hub.snapshot("org/model", "main", &names).expect("fetched");
    let folder = cache.path().join("models--org--model");
    assert_eq!(dir, folder.join("snapshots").join(COMMIT));
    for (name, body) in FILES {
        assert_eq!(std::fs::read(dir.join(name)).expect(name), body, "{name}");
        let link = std::fs::read_link(dir.join(name)).expect("a symlink into blobs/");
        assert!(link.starts_with("../../blobs"), "{}", link.display());
    }
    let weights_sha = hex::encode(Sha256::digest(FILES[0].1));
    assert!(folder.join("blobs").join(&weights_sha).is_file());
    assert_eq!(std::fs::read_to_string(folder.join("refs/main")).expect("ref"), COMMIT);
    // Nothing temporary is left beside the blobs or the links.
    for sub in ["blobs", &format!("snapshots/{COMMIT}")] {
        for entry in std::fs::read_dir(folder.join(sub)).expect("list") {
            let name = entry.expect("entry").file_name().to_string_lossy().to_string();
            assert!(!name.starts_with('.'), "left behind: {sub}/{name}");
        }
    }

    // A second resolve downloads nothing: HEADs only.
    let before = server.requests().len();
    hub.snapshot("org/model", "main", &names).expect("cached");
    let again: Vec<_> = server.requests()[before..].to_vec();
    assert!(again.iter().all(|(method, _, _)| method == "HEAD"), "{again:?}");

    // Offline, the cache answers for the branch and for the commit, and a revision it does
    // not hold is a clear error naming the cache.
    let offline = Hub { offline: true, ..hub.clone() };
    assert_eq!(offline.snapshot("org/model", "main", &names).expect("offline"), dir);
    assert_eq!(offline.snapshot("org/model", COMMIT, &names).expect("offline by commit"), dir);
    let e = offline.snapshot("org/model", "v2", &names).expect_err("not cached");
    assert!(matches!(e, FetchError::Offline { .. }) && e.to_string().contains("HF_HUB_OFFLINE"), "{e}");

    // The hub unreachable: the cached snapshot is used; a revision never fetched is an error
    // naming the address.
    let unreachable = Hub::new("http://127.0.0.1:9", cache.path());
    assert_eq!(unreachable.snapshot("org/model", "main", &names).expect("cache fallback"), dir);
    let e = unreachable.snapshot("org/model", "v2", &names).expect_err("nothing cached");
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
}

#[test]
fn a_moved_branch_makes_a_new_snapshot_and_keeps_the_old_one() {
    let server = Server::start();
    serve(&server, "main", COMMIT, &FILES);
    let cache = tempfile::tempdir().expect("cache");
    let hub = Hub::new(&server.base, cache.path());
    let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    let first = hub.snapshot("org/model", "main", &names).expect("v1");
    let moved: [(&str, &[u8]); 3] = [("model.safetensors", b"weights v2"), FILES[1], FILES[2]];
    serve(&server, "main", NEXT_COMMIT, &moved);
    let second = hub.snapshot("org/model", "main", &names).expect("v2");
    assert_ne!(first, second);
    assert_eq!(std::fs::read(second.join("model.safetensors")).expect("v2"), b"weights v2");
    assert_eq!(std::fs::read(first.join("model.safetensors")).expect("v1 kept"), b"weights v1");
    let folder = cache.path().join("models--org--model");
    assert_eq!(std::fs::read_to_string(folder.join("refs/main")).expect("ref"), NEXT_COMMIT);
}

#[test]
fn a_blob_that_does_not_match_its_etag_or_size_is_refused_and_not_kept() {
    let server = Server::start();
    serve(&server, "main", COMMIT, &FILES);
    let sha = hex::encode(Sha256::digest(FILES[0].1));
    let cdn = format!("/cdn/{sha}");
    let cache = tempfile::tempdir().expect("cache");
    let hub = Hub::new(&server.base, cache.path());
    let blobs = cache.path().join("models--org--model/blobs");

    server.route("GET", &cdn, Answer::ok(b"tampered!!".to_vec()));
    let e = hub.snapshot("org/model", "main", &["model.safetensors"]).expect_err("tampered");
    assert!(matches!(e, FetchError::Digest { .. }) && e.to_string().contains(&sha), "{e}");
    assert_eq!(std::fs::read_dir(&blobs).expect("blobs").count(), 0, "nothing kept");

    server.route("GET", &cdn, Answer { claimed_length: Some(100), ..Answer::ok(b"weights".to_vec()) });
    let e = hub.snapshot("org/model", "main", &["model.safetensors"]).expect_err("cut short");
    assert!(e.to_string().contains("model.safetensors") || e.to_string().contains(&cdn), "{e}");
    assert_eq!(std::fs::read_dir(&blobs).expect("blobs").count(), 0, "nothing kept");
    assert!(!cache.path().join("models--org--model/snapshots").join(COMMIT).join("model.safetensors").exists());
}

#[test]
fn missing_files_private_repos_and_servers_that_are_not_a_hub_are_named() {
    let server = Server::start();
    let cache = tempfile::tempdir().expect("cache");
    let hub = Hub::new(&server.base, cache.path());
    let e = hub.snapshot("org/model", "main", &["model.safetensors"]).expect_err("404");
    assert!(e.to_string().contains("no model.safetensors in org/model at revision main"), "{e}");

    server.route("HEAD", "/org/model/resolve/main/model.safetensors", Answer::status(401));
    let e = hub.snapshot("org/model", "main", &["model.safetensors"]).expect_err("401");
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");

    server.route("HEAD", "/org/model/resolve/main/model.safetensors", Answer::ok(b"x".to_vec()));
    let e = hub.snapshot("org/model", "main", &["model.safetensors"]).expect_err("not a hub");
    assert!(e.to_string().contains("X-Repo-Commit"), "{e}");
}

#[test]
fn the_token_goes_to_the_hub_only_and_never_into_debug_output() {
    let server = Server::start();
    serve(&server, "main", COMMIT, &FILES);
    let cache = tempfile::tempdir().expect("cache");
    let hub = Hub { token: Some("hf_secret".into()), ..Hub::new(&server.base, cache.path()) };
    hub.snapshot("org/model", "main", &["model.safetensors", "config.json"]).expect("fetched");
    for (method, path, auth) in server.requests() {
        assert_eq!(auth.as_deref(), Some("Bearer hf_secret"), "{method} {path}");
    }
    assert!(!format!("{hub:?}").contains("hf_secret"));
    // A redirect to another host gets no token.
    let cdn = Server::start();
    let sha = hex::encode(Sha256::digest(FILES[0].1));
    cdn.route("GET", "/blob", Answer::ok(FILES[0].1.to_vec()));
    server.route(
        "HEAD",
        "/org/other/resolve/main/model.safetensors",
        Answer::status(302)
            .header("Location", &format!("{}/blob", cdn.base))
            .header("X-Repo-Commit", COMMIT)
            .header("X-Linked-Etag", &sha),
    );
    hub.snapshot("org/other", "main", &["model.safetensors"]).expect("via the other host");
    assert_eq!(cdn.requests().len(), 1);
    assert!(cdn.requests().iter().all(|(_, _, auth)| auth.is_none()), "{:?}", cdn.requests());
}
