//! The build manifest: every `lorec build` records the artifact's identity beside it, one file
//! per build, so concurrent builds never corrupt it; `lorec versions` lists the builds.

use crate::support::*;

fn versions(path: &std::path::Path) -> Vec<serde_json::Value> {
    let r = run(lorec().arg("versions").arg(path).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str::<serde_json::Value>(&r.stdout).expect("json").as_array().expect("array").clone()
}

#[test]
fn every_build_is_recorded_with_its_digest_and_the_build_before_it() {
    let tmp = TempDir::new("manifest");
    let out = tmp.path().join("out/me.lore");
    build(&workspace().join("tests/compat/kb"), &out, &["--artifact-version", "1.0.0"]);
    let first = std::fs::read(&out).expect("artifact");
    build(&workspace().join("tests/compat/kb"), &out, &["--artifact-version", "1.1.0"]);
    let second = std::fs::read(&out).expect("artifact");
    let entries = versions(&out);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (a, b) = (&entries[0], &entries[1]);
    assert_eq!((a["version"].as_str(), b["version"].as_str()), (Some("1.0.0"), Some("1.1.0")));
    assert_eq!(a["sha256"], sha256_hex(&first));
    assert_eq!(b["sha256"], sha256_hex(&second));
    assert_eq!(b["bytes"], second.len());
    assert_eq!(a["source_tree_sha256"], b["source_tree_sha256"], "the same sources");
    assert_eq!(a["previous"], serde_json::Value::Null);
    assert_eq!(b["previous"]["build_id"], a["build_id"]);
    assert_eq!(b["previous"]["version"], "1.0.0");
    assert_eq!(b["audience"], "public");
    assert_eq!(b["artifact"], "me.lore");
    // The folder lists every artifact's builds; the text form names them too.
    let text = run(lorec().arg("versions").arg(tmp.path().join("out")));
    assert!(text.stdout.contains("me.lore  1.1.0") && text.stdout.contains("(after 1.0.0"), "{}", text.stdout);
}

#[test]
fn concurrent_builds_each_record_a_whole_entry() {
    let tmp = TempDir::new("manifest-concurrent");
    let dir = tmp.path().join("out");
    let builds: Vec<_> = ["a.lore", "b.lore", "a.lore", "c.lore"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            lorec()
                .arg("build")
                .arg(workspace().join("tests/compat/kb"))
                .arg("-o")
                .arg(dir.join(name))
                .arg("--model")
                .arg(model_dir())
                .arg("--no-cache")
                .args(["--artifact-version", &format!("0.{i}")])
                .env("LORE_KEY", TEST_KEY)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in builds {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let entries = versions(&dir);
    assert_eq!(entries.len(), 4, "{entries:?}");
    let mut versions: Vec<&str> = entries.iter().map(|e| e["version"].as_str().expect("version")).collect();
    versions.sort_unstable();
    assert_eq!(versions, ["0.0", "0.1", "0.2", "0.3"]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("manifest"))
        .expect("manifest")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files are left: {leftovers:?}");
}
