//! Damaged, truncated and foreign artifacts, and wrong keys: clear errors, never a panic.

use std::path::{Path, PathBuf};

use crate::support::*;

fn small_artifact(tmp: &TempDir, extra: &[&str]) -> PathBuf {
    tmp.write("kb/jobs.yaml", "jobs:\n  - id: keeper\n    title: Lighthouse keeper\n    company: Northern Lights Board\n    achievements:\n      - Kept the lamp lit through the storm of 1987\n");
    tmp.write(
        "kb/books.yaml",
        "books:\n  - title: To the Lighthouse\n    author: Virginia Woolf\n    reason: Read it every winter\n",
    );
    let out = tmp.path().join("kb.lore");
    build(&tmp.path().join("kb"), &out, extra);
    out
}

fn inspect(path: &Path) -> serde_json::Value {
    let r = run(lorec().arg("inspect").arg(path).arg("--json").env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("inspect --json")
}

fn query(path: &Path, key: Option<&str>) -> Run {
    let mut cmd = lore();
    cmd.arg("query").arg(path).arg("Who kept the lamp lit?");
    if let Some(k) = key {
        cmd.env("LORE_KEY", k);
    }
    run(&mut cmd)
}

fn verify(path: &Path) -> Run {
    run(lorec().arg("verify").arg(path).env("LORE_KEY", TEST_KEY))
}

#[test]
fn sealed_artifact_round_trip_and_inspect() {
    let tmp = TempDir::new("art");
    let out = small_artifact(&tmp, &["--artifact-version", "2.3.0"]);
    let info = inspect(&out);
    assert_eq!(info["format_version"], format_version_now());
    assert_eq!(info["artifact_version"], "2.3.0");
    assert_eq!(info["cipher"]["name"], "aes-256-gcm");
    assert_eq!(info["counts"]["chunks"], 2);
    assert_eq!(info["sources"].as_array().map(Vec::len), Some(2));
    let sections: Vec<_> = info["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .map(|s| (s["kind"].clone(), s["encrypted"].clone()))
        .collect();
    assert_eq!(
        sections,
        [
            ("model".into(), false.into()),
            ("index".into(), true.into()),
            ("texts".into(), true.into()),
            ("sources".into(), true.into())
        ]
    );
    let text = run(lorec().arg("inspect").arg(&out));
    assert!(text.stdout.contains("aes-256-gcm, key id"), "{}", text.stdout);
    // The key never appears in the artifact or in what lorec prints about it.
    let bytes = std::fs::read(&out).expect("read");
    assert!(!bytes.windows(TEST_KEY.len()).any(|w| w == TEST_KEY.as_bytes()));
    assert!(!text.stdout.contains(TEST_KEY));
    // Plaintext of the knowledge base is not in the file.
    assert!(!bytes.windows(10).any(|w| w == b"Lighthouse"), "chunk text leaked into the sealed artifact");
    let ok = verify(&out);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("all sections decrypt and validate"), "{}", ok.stdout);
    let answer = query(&out, Some(TEST_KEY));
    assert_eq!(answer.code, 0, "{}", answer.stderr);
    assert!(answer.stdout.contains("jobs.yaml#/jobs/0"), "{}", answer.stdout);
}

#[test]
fn f32_and_int8_vectors_both_answer() {
    let tmp = TempDir::new("vec");
    for vectors in ["f32", "int8"] {
        let out = small_artifact(&tmp, &["--vectors", vectors]);
        let answer = query(&out, Some(TEST_KEY));
        assert_eq!(answer.code, 0, "{vectors}: {}", answer.stderr);
        assert!(answer.stdout.contains("jobs.yaml#/jobs/0"), "{vectors}: {}", answer.stdout);
    }
}

#[test]
fn wrong_or_missing_key_is_named_as_such() {
    let tmp = TempDir::new("art");
    let out = small_artifact(&tmp, &[]);
    let wrong = query(&out, Some(OTHER_KEY));
    assert_eq!(wrong.code, 2);
    assert!(wrong.stderr.contains("wrong key"), "{}", wrong.stderr);
    assert!(!wrong.stderr.contains(OTHER_KEY));
    let missing = query(&out, None);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("set LORE_KEY"), "{}", missing.stderr);
    let malformed = query(&out, Some("not-a-key"));
    assert_eq!(malformed.code, 1);
    assert!(malformed.stderr.contains("not valid base64"), "{}", malformed.stderr);
}

#[test]
fn plaintext_build_is_marked_and_needs_no_key() {
    let tmp = TempDir::new("art");
    tmp.write("kb/a.yaml", "notes:\n  - title: Harbour\n    text: The harbour freezes in February\n");
    let out = tmp.path().join("plain.lore");
    build_plain(&tmp.path().join("kb"), &out);
    assert_eq!(inspect(&out)["cipher"]["name"], "none");
    let bytes = std::fs::read(&out).expect("read");
    assert!(bytes.windows(7).any(|w| w == b"harbour"), "plaintext build should hold plain text");
    let answer = query(&out, None);
    assert_eq!(answer.code, 0, "{}", answer.stderr);
    let v = run(lorec().arg("verify").arg(&out));
    assert_eq!(v.code, 0, "{}", v.stderr);
}

/// Flip one byte in each region of the file: `lorec verify` must notice every one, and
/// neither binary may panic.
#[test]
fn tampering_anywhere_is_detected() {
    let tmp = TempDir::new("art");
    let out = small_artifact(&tmp, &[]);
    let good = std::fs::read(&out).expect("read");
    let info = inspect(&out);
    let section = |i: usize| {
        (
            info["sections"][i]["offset"].as_u64().expect("offset") as usize,
            info["sections"][i]["stored_len"].as_u64().expect("len") as usize,
        )
    };
    let (model_at, model_len) = section(0);
    let (index_at, _) = section(1);
    let (texts_at, texts_len) = section(2);
    let regions = [
        ("format version", 8),
        ("flags", 20),
        ("header digest", 30),
        ("reserved preamble", 60),
        ("header", 80),
        ("model section", model_at + model_len / 2),
        ("padding before index", index_at - 1),
        ("index section", index_at + 5),
        ("texts section", texts_at + texts_len / 2),
        ("trailer", good.len() - 3),
    ];
    for (what, at) in regions {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        let path = tmp.path().join("tampered.lore");
        std::fs::write(&path, &bad).expect("write");
        let v = verify(&path);
        assert_eq!(v.code, 2, "verify missed a change in the {what} (byte {at}):\n{}{}", v.stdout, v.stderr);
        assert!(v.stderr.starts_with("error: "), "{what}: {}", v.stderr);
        let q = query(&path, Some(TEST_KEY));
        // The model table is public and checked only structurally at start-up (a full hash
        // would cost the start-up budget); everything else must be refused.
        if !matches!(what, "model section" | "padding before index" | "reserved preamble" | "trailer") {
            assert_eq!(q.code, 2, "lore accepted a change in the {what}:\n{}", q.stdout);
        }
    }
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let tmp = TempDir::new("art");
    let out = small_artifact(&tmp, &[]);
    let good = std::fs::read(&out).expect("read");
    for keep in [0, 7, 8, 63, 100, 1500, good.len() / 2, good.len() - 1] {
        let path = tmp.path().join("cut.lore");
        std::fs::write(&path, &good[..keep]).expect("write");
        let q = query(&path, Some(TEST_KEY));
        assert_eq!(q.code, 2, "truncated to {keep} bytes was accepted");
        assert!(q.stderr.contains("cut.lore"), "{}", q.stderr);
        let v = verify(&path);
        assert_eq!(v.code, 2);
    }
    let path = tmp.write("notes.lore", "just some text, not an artifact at all\n");
    let q = query(&path, Some(TEST_KEY));
    assert!(q.stderr.contains("not a lore artifact"), "{}", q.stderr);
    let missing = query(&tmp.path().join("absent.lore"), Some(TEST_KEY));
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("cannot open"), "{}", missing.stderr);
}

#[test]
fn malformed_retrieval_override_is_refused() {
    let tmp = TempDir::new("params");
    let out = small_artifact(&tmp, &[]);
    let r = run(lore()
        .arg("query")
        .arg(&out)
        .arg("lamp")
        .env("LORE_KEY", TEST_KEY)
        .env("LORE_RETRIEVAL_PARAMS", "1.2,0.75"));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("LORE_RETRIEVAL_PARAMS takes five numbers"), "{}", r.stderr);
}

#[test]
fn newer_format_versions_get_a_hint() {
    let tmp = TempDir::new("art");
    let out = small_artifact(&tmp, &[]);
    let mut bytes = std::fs::read(&out).expect("read");
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    bytes[12..16].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&out, &bytes).expect("write");
    let q = query(&out, Some(TEST_KEY));
    assert_eq!(q.code, 2);
    assert!(q.stderr.contains("format version 9 is newer") && q.stderr.contains("upgrade lore"), "{}", q.stderr);
}

#[test]
fn public_builds_leave_internal_and_private_entities_out() {
    let tmp = TempDir::new("vis");
    tmp.write(
        "kb/jobs.yaml",
        "jobs:\n  - title: Harbour pilot\n    visibility: public\n  - title: Secret night shift at the quorvex yard\n    visibility: internal\n  - title: Private quorvex diary\n    visibility: private\n",
    );
    let public = tmp.path().join("public.lore");
    build(&tmp.path().join("kb"), &public, &[]);
    assert_eq!(inspect(&public)["counts"]["chunks"], 1);
    assert_eq!(inspect(&public)["audience"], "public");
    let internal = tmp.path().join("internal.lore");
    build(&tmp.path().join("kb"), &internal, &["--audience", "internal"]);
    assert_eq!(inspect(&internal)["counts"]["chunks"], 3);
    let ids = hit_ids(&ask(&internal, "quorvex yard night shift", 3));
    assert!(ids.contains(&"jobs.yaml#/jobs/1".to_string()), "{ids:?}");
    // Not even the plaintext build of the public audience carries the internal text.
    let plain = tmp.path().join("plain.lore");
    let r = run(lorec()
        .arg("build")
        .arg(tmp.path().join("kb"))
        .arg("-o")
        .arg(&plain)
        .arg("--model")
        .arg(model_dir())
        .arg("--no-encrypt"));
    assert_eq!(r.code, 0);
    let bytes = std::fs::read(&plain).expect("read");
    assert!(!bytes.windows(7).any(|w| w == b"quorvex"), "internal text leaked into a public build");
}

#[test]
fn incremental_rebuild_embeds_only_changed_files_and_keeps_ids() {
    let tmp = TempDir::new("inc");
    for i in 0..5 {
        tmp.write(
            &format!("kb/f{i}.yaml"),
            format!("items:\n  - title: Item {i} about sailing boats\n  - title: Item {i} about mountain huts\n"),
        );
    }
    let out = tmp.path().join("kb.lore");
    let cache = tmp.path().join("cache");
    let build_logged = || {
        let r = run(lorec()
            .arg("build")
            .arg(tmp.path().join("kb"))
            .arg("-o")
            .arg(&out)
            .arg("--model")
            .arg(model_dir())
            .arg("--cache-dir")
            .arg(&cache)
            .env("LORE_KEY", TEST_KEY)
            .env("LORE_LOG", "info")
            .env("LORE_LOG_FORMAT", "json"));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let line = r.stderr.lines().find(|l| l.contains("artifact written")).expect("build log line").to_string();
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log");
        (
            v["fields"]["embedded_files"].as_u64().expect("embedded"),
            v["fields"]["cached_files"].as_u64().expect("cached"),
        )
    };
    assert_eq!(build_logged(), (5, 0));
    let first = hit_ids(&ask(&out, "mountain huts", 10));
    assert_eq!(build_logged(), (0, 5));
    tmp.write("kb/f3.yaml", "items:\n  - title: Item 3 about sailing boats\n  - title: Item 3 about alpine huts\n");
    assert_eq!(build_logged(), (1, 4));
    let again = hit_ids(&ask(&out, "mountain huts", 10));
    assert_eq!(first.len(), again.len());
    assert!(again.contains(&"f0.yaml#/items/1".to_string()), "{again:?}");
}

/// `lorec build` with a cache folder; returns the run and its (embedded, cached) file counts.
fn build_cached(kb: &Path, out: &Path, cache: &Path, extra: &[&str]) -> (Run, (u64, u64)) {
    build_cached_with(&model_dir(), kb, out, cache, extra)
}

/// [`build_cached`] with another model.
fn build_cached_with(model: &Path, kb: &Path, out: &Path, cache: &Path, extra: &[&str]) -> (Run, (u64, u64)) {
    let mut cmd = lorec();
    if !extra.contains(&"--no-encrypt") {
        cmd.env("LORE_KEY", TEST_KEY);
    }
    let r = run(cmd
        .arg("build")
        .arg(kb)
        .arg("-o")
        .arg(out)
        .arg("--model")
        .arg(model)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env("LORE_LOG", "info")
        .env("LORE_LOG_FORMAT", "json"));
    let counts = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "artifact written")
        .map_or((0, 0), |v| {
            (v["fields"]["embedded_files"].as_u64().unwrap_or(0), v["fields"]["cached_files"].as_u64().unwrap_or(0))
        });
    (r, counts)
}

/// Every hit (id and score) for a few questions, to compare two artifacts' answers.
fn answers(artifact: &Path) -> Vec<(String, String)> {
    ["sailing boats", "alpine huts in winter", "who cooks soup", "lighthouse"]
        .iter()
        .flat_map(|q| {
            let a = ask_ranked(artifact, q, 50);
            a["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| (h["id"].as_str().unwrap_or_default().to_string(), format!("{:.5}", h["score"])))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn an_incremental_build_answers_exactly_like_a_clean_build() {
    let tmp = TempDir::new("inc-equal");
    for i in 0..6 {
        tmp.write(
            &format!("kb/f{i}.yaml"),
            format!(
                "items:\n  - title: Item {i} about sailing boats\n    summary: Crossed the bay {i} times in a dinghy.\n  - title: Item {i} about mountain huts\n    summary: Cooked soup for {i} hikers.\n"
            ),
        );
    }
    tmp.write("kb/notes.md", "# Notes\n\nThe lighthouse on the point.\n\n## Winter\n\nAlpine huts close in winter.\n");
    let kb = tmp.path().join("kb");
    let cache = tmp.path().join("cache");
    let incremental = tmp.path().join("incremental.lore");
    let (r, counts) = build_cached(&kb, &incremental, &cache, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counts, (7, 0));
    // Edit one file, add one, delete one: the rebuild reuses the other four units.
    tmp.write("kb/f2.yaml", "items:\n  - title: Item 2 about alpine huts\n    summary: Snowed in for a week.\n");
    tmp.write("kb/f9.yaml", "items:\n  - title: Item 9 about sailing boats in a storm\n");
    std::fs::remove_file(kb.join("f4.yaml")).expect("remove");
    let (r, counts) = build_cached(&kb, &incremental, &cache, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counts, (2, 5));
    let clean = tmp.path().join("clean.lore");
    build(&kb, &clean, &[]);
    assert_eq!(inspect(&incremental)["counts"], inspect(&clean)["counts"]);
    assert_eq!(answers(&incremental), answers(&clean));
    let verified = run(lorec().arg("verify").arg(&incremental).env("LORE_KEY", TEST_KEY));
    assert_eq!(verified.code, 0, "{}", verified.stderr);
}

#[test]
fn cached_files_still_show_their_warnings() {
    let tmp = TempDir::new("inc-warn");
    tmp.write("kb/jobs.yaml", "jobs:\n  - title: Baker\n    highlights:\n      - Bread\n      - Bread\n");
    let kb = tmp.path().join("kb");
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("kb.lore");
    let (first, counts) = build_cached(&kb, &out, &cache, &[]);
    assert_eq!((first.code, counts), (0, (1, 0)), "{}", first.stderr);
    let (second, counts) = build_cached(&kb, &out, &cache, &[]);
    assert_eq!((second.code, counts), (0, (0, 1)), "{}", second.stderr);
    let warning = |r: &Run| r.stderr.lines().filter(|l| l.contains("is listed twice")).count();
    assert_eq!(warning(&first), 1, "{}", first.stderr);
    assert_eq!(warning(&second), 1, "a cached file lost its warning:\n{}", second.stderr);
    assert!(second.stderr.contains("jobs.yaml:5:"), "{}", second.stderr);
    let (denied, _) = build_cached(&kb, &out, &cache, &["--deny", "warnings"]);
    assert_eq!(denied.code, 2, "--deny warnings must fail on cached warnings too:\n{}", denied.stderr);
}

#[test]
fn a_damaged_cache_costs_time_not_correctness() {
    let tmp = TempDir::new("inc-damage");
    tmp.write("kb/a.yaml", "items:\n  - title: Sailing boats on the bay\n");
    tmp.write("kb/b.yaml", "items:\n  - title: Mountain huts in winter\n");
    let kb = tmp.path().join("kb");
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("kb.lore");
    assert_eq!(build_cached(&kb, &out, &cache, &[]).0.code, 0);
    let expected = answers(&out);
    // One flipped bit in the middle of every unit, of the prepared model and of the stored
    // vectors (damage that still parses), and the key file cut mid-entry.
    let mut damaged_kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&cache).expect("cache folder") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("read");
        let kind = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_string();
        match kind.as_str() {
            "unit" | "bin" | "vecs" => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
            }
            "keys" => bytes.truncate(bytes.len() - 3),
            _ => continue,
        }
        std::fs::write(&path, bytes).expect("write");
        damaged_kinds.insert(kind);
    }
    assert_eq!(damaged_kinds.len(), 4, "expected units, a prepared model and both embedding files: {damaged_kinds:?}");
    let (r, counts) = build_cached(&kb, &out, &cache, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counts, (2, 0), "damaged units must be misses");
    assert_eq!(answers(&out), expected);
    let (r, counts) = build_cached(&kb, &out, &cache, &[]);
    assert_eq!((r.code, counts), (0, (0, 2)), "the cache heals: {}", r.stderr);
    assert_eq!(answers(&out), expected);
}

#[test]
fn one_cache_serves_both_audiences_without_leaking() {
    let tmp = TempDir::new("inc-audience");
    tmp.write(
        "kb/jobs.yaml",
        "jobs:\n  - title: Harbour pilot\n  - title: Secret night shift at the quorvex yard\n    visibility: internal\n",
    );
    let kb = tmp.path().join("kb");
    let cache = tmp.path().join("cache");
    let internal = tmp.path().join("internal.lore");
    let (r, _) = build_cached(&kb, &internal, &cache, &["--audience", "internal"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(inspect(&internal)["counts"]["chunks"], 2);
    let public = tmp.path().join("public.lore");
    let (r, counts) = build_cached(&kb, &public, &cache, &["--audience", "public", "--no-encrypt"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(counts, (1, 0), "the internal build's unit must not serve a public build");
    assert_eq!(inspect(&public)["counts"]["chunks"], 1);
    let bytes = std::fs::read(&public).expect("read");
    assert!(!bytes.windows(7).any(|w| w == b"quorvex"), "internal text leaked into a public build");
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly_instead_of_panicking() {
    // Regression: `lorec inspect big.lore | head` panicked with "failed printing to stdout".
    let tmp = TempDir::new("pipe");
    for i in 0..800 {
        tmp.write(&format!("kb/f{i:04}.yaml"), format!("items:\n  - title: Item number {i}\n"));
    }
    let out = tmp.path().join("kb.lore");
    build(&tmp.path().join("kb"), &out, &[]);
    let mut child = lorec()
        .arg("inspect")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lorec");
    // Read one line, then hang up, as `head -1` does; the listing is far longer than a pipe holds.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("the listing starts");
    drop(stdout);
    let done = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(done.status.code(), Some(0), "{stderr}");
}

#[test]
fn a_changed_model_is_never_served_from_the_prepared_model_cache() {
    let tmp = TempDir::new("model-cache");
    let model = tmp.path().join("model");
    crate::golden::write_tiny_model(&model);
    tmp.write(
        "kb/keeper.yaml",
        "jobs:\n  - title: Lighthouse keeper\n    summary: Kept the lamp lit through the storm.\n",
    );
    let (cache, out) = (tmp.path().join("cache"), tmp.path().join("kb.lore"));
    let build = || {
        let (r, _) = build_cached_with(&model, &tmp.path().join("kb"), &out, &cache, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        inspect(&out)["embedder"]["weights_sha256"].as_str().expect("weights digest").to_string()
    };
    let first = build();
    let prepared = std::fs::read_dir(&cache)
        .expect("cache folder")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("model-")))
        .count();
    assert_eq!(prepared, 1, "the prepared table is cached");
    assert_eq!(build(), first);
    // New weights in the same file, as a re-download would leave them.
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&weights, &bytes).expect("write");
    let second = build();
    assert_ne!(second, first, "the build used the cached table of the old weights");
    let expected: String = sha256_hex(&bytes);
    assert_eq!(second, expected);
}

#[test]
fn units_no_build_uses_any_more_are_pruned_and_used_ones_kept() {
    let tmp = TempDir::new("inc-prune");
    tmp.write("kb/a.yaml", "items:\n  - title: Sailing boats on the bay\n");
    tmp.write("kb/b.yaml", "items:\n  - title: Mountain huts in winter\n");
    let (kb, cache, out) = (tmp.path().join("kb"), tmp.path().join("cache"), tmp.path().join("kb.lore"));
    let units = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .expect("cache folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "unit"))
            .collect()
    };
    assert_eq!(build_cached(&kb, &out, &cache, &[]).0.code, 0);
    let before = units();
    assert_eq!(before.len(), 2);
    // Both units last used a month ago; then a.yaml changes, so only b.yaml's is used again.
    let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 24 * 3600);
    for unit in &before {
        let file = std::fs::File::options().write(true).open(unit).expect("open unit");
        file.set_modified(month_ago).expect("age unit");
    }
    tmp.write("kb/a.yaml", "items:\n  - title: Sailing boats in a storm\n");
    let (r, counts) = build_cached(&kb, &out, &cache, &[]);
    assert_eq!((r.code, counts), (0, (1, 1)), "{}", r.stderr);
    let after = units();
    assert_eq!(after.len(), 2, "the old a.yaml unit is gone, b.yaml's kept, the new a.yaml's added");
    assert_eq!(after.intersection(&before).count(), 1, "exactly b.yaml's unit survives");
}
