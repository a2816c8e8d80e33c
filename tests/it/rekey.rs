//! `lorec rekey`: an artifact re-encrypted under a new key without a rebuild answers exactly
//! as before, keeps its content hashes, changes its key id, and refuses the old key by name.

use crate::support::*;

fn sections(artifact: &std::path::Path) -> (Vec<(String, String)>, String) {
    let r = run(lorec().arg("inspect").arg(artifact).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let sections = info["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .map(|s| (s["kind"].as_str().expect("kind").to_string(), s["plain_sha256"].as_str().expect("sha").to_string()))
        .collect();
    (sections, info["cipher"]["key_id"].as_str().expect("key id").to_string())
}

fn key_file(tmp: &TempDir, name: &str, key: &str) -> std::path::PathBuf {
    let path = tmp.write(name, key);
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn rekey_keeps_the_content_changes_the_key_id_and_refuses_the_old_key() {
    let tmp = TempDir::new("rekey");
    let original = tmp.path().join("a.lore");
    build(&workspace().join("data"), &original, &[]);
    let new_key = key_file(&tmp, "new.key", OTHER_KEY);
    let rekeyed = tmp.path().join("b.lore");
    let r = run(lorec()
        .arg("rekey")
        .arg(&original)
        .arg("--to-key-file")
        .arg(&new_key)
        .arg("-o")
        .arg(&rekeyed)
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (before, old_id) = sections(&original);
    let (after, new_id) = sections(&rekeyed);
    assert_eq!(before, after, "content hashes stay the same");
    assert_ne!(old_id, new_id);
    assert!(r.stdout.contains(&old_id) && r.stdout.contains(&new_id), "{}", r.stdout);

    let ok = run(lorec().arg("verify").arg(&rekeyed).env("LORE_KEY_FILE", &new_key));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let old = run(lorec().arg("verify").arg(&rekeyed).env("LORE_KEY", TEST_KEY));
    assert_eq!(old.code, 2, "{}", old.stderr);
    assert!(old.stderr.contains(&old_id) && old.stderr.contains(&new_id), "both key ids are named: {}", old.stderr);

    // The same answers, from the same chunks.
    let q = "What kind of robots do you build?";
    let a = run(lore().args(["query", "--json"]).arg(&original).arg(q).env("LORE_KEY", TEST_KEY));
    let b = run(lore().args(["query", "--json"]).arg(&rekeyed).arg(q).env("LORE_KEY_FILE", &new_key));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let hits = |out: &str| hit_ids(&serde_json::from_str(out).expect("json"));
    assert_eq!(hits(&a.stdout), hits(&b.stdout));

    // In place: the file is replaced atomically, and re-keying back restores the old key id.
    let back = key_file(&tmp, "old.key", TEST_KEY);
    let r = run(lorec()
        .arg("rekey")
        .arg(&rekeyed)
        .arg("--to-key-file")
        .arg(&back)
        .arg("-o")
        .arg(&rekeyed)
        .env("LORE_KEY_FILE", &new_key));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sections(&rekeyed), (before, old_id));
}

#[test]
fn rekey_with_the_wrong_key_or_a_damaged_file_writes_nothing() {
    let tmp = TempDir::new("rekey-bad");
    let original = tmp.path().join("a.lore");
    build(&workspace().join("data"), &original, &[]);
    let new_key = key_file(&tmp, "new.key", OTHER_KEY);
    let out = tmp.path().join("out.lore");
    let wrong = run(lorec()
        .arg("rekey")
        .arg(&original)
        .arg("--to-key-file")
        .arg(&new_key)
        .arg("-o")
        .arg(&out)
        .env("LORE_KEY", OTHER_KEY));
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("wrong key"), "{}", wrong.stderr);
    assert!(!out.exists());
    let mut bytes = std::fs::read(&original).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let damaged = tmp.write("damaged.lore", &bytes);
    let r = run(lorec()
        .arg("rekey")
        .arg(&damaged)
        .arg("--to-key-file")
        .arg(&new_key)
        .arg("-o")
        .arg(&out)
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!out.exists(), "nothing is written for a damaged artifact");
    let missing = run(lorec().arg("rekey").arg(&original).arg("-o").arg(&out).env("LORE_KEY", TEST_KEY));
    assert_eq!(missing.code, 2, "--to-key-file is required: {}", missing.stderr);
}
