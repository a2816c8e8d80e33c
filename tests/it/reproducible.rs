//! Reproducible artifacts: the same sources, settings and key give the same section hashes
//! always, and the same bytes under `SOURCE_DATE_EPOCH`; `lorec verify --sources` ties an
//! artifact to a source tree.

use std::path::{Path, PathBuf};

use crate::support::*;

/// `lorec build`, optionally pinned to one core (`taskset`), with or without the cache.
fn build_with(kb: &Path, out: &Path, one_core: bool, cache: bool, epoch: Option<&str>) {
    let mut cmd = if one_core {
        let mut c = lorec();
        let program = c.get_program().to_owned();
        let mut pinned = std::process::Command::new("taskset");
        pinned.args(["-c", "0"]).arg(program);
        pinned
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LORE_LOG", "warn")
            .env("LORE_EMBEDDER", "potion");
        c = pinned;
        c
    } else {
        lorec()
    };
    cmd.arg("build").arg(kb).arg("-o").arg(out).arg("--model").arg(model_dir()).env("LORE_KEY", TEST_KEY);
    cmd.arg("--cache-dir").arg(out.with_extension("cache"));
    if !cache {
        cmd.arg("--no-cache");
    }
    if let Some(epoch) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch);
    }
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn section_hashes(art: &Path) -> Vec<(String, String)> {
    let r = run(lorec().arg("inspect").arg(art).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    info["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap_or_default().to_string(),
                s["plain_sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn our_data(tmp: &TempDir) -> PathBuf {
    let kb = tmp.path().join("data");
    copy_dir(&workspace().join("data"), &kb);
    kb
}

#[test]
fn section_hashes_do_not_depend_on_the_process_the_cache_or_the_cores() {
    let tmp = TempDir::new("repro-hashes");
    let kb = our_data(&tmp);
    let first = tmp.path().join("a.lore");
    build_with(&kb, &first, false, false, None);
    let expected = section_hashes(&first);
    for (name, one_core, cache) in
        [("b", false, false), ("c", true, false), ("d", false, true), ("e", false, true), ("f", true, true)]
    {
        let out = tmp.path().join(format!("{name}.lore"));
        build_with(&kb, &out, one_core, cache, None);
        assert_eq!(section_hashes(&out), expected, "{name}: one core {one_core}, cache {cache}");
    }
}

#[test]
fn with_source_date_epoch_two_builds_are_byte_identical_and_other_sources_are_not() {
    let tmp = TempDir::new("repro-bytes");
    let kb = our_data(&tmp);
    let (a, b, c) = (tmp.path().join("a.lore"), tmp.path().join("b.lore"), tmp.path().join("c.lore"));
    build_with(&kb, &a, false, false, Some("1700000000"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_with(&kb, &b, true, true, Some("1700000000"));
    let (bytes_a, bytes_b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert!(bytes_a == bytes_b, "two reproducible builds differ");
    let info = run(lorec().arg("inspect").arg(&a).arg("--json"));
    let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("json");
    assert_eq!(info["created_unix"], 1_700_000_000);
    // One changed word: other bytes, another build id, another salt (so no nonce is reused).
    let faq = kb.join("faq.yaml");
    let text = std::fs::read_to_string(&faq).expect("read").replacen("Hybrid.", "Mostly hybrid.", 1);
    std::fs::write(&faq, text).expect("write");
    build_with(&kb, &c, false, false, Some("1700000000"));
    let other = run(lorec().arg("inspect").arg(&c).arg("--json"));
    let other: serde_json::Value = serde_json::from_str(&other.stdout).expect("json");
    assert_ne!(other["build_id"], info["build_id"]);
    assert_ne!(other["cipher"]["salt"], info["cipher"]["salt"]);
    assert_ne!(std::fs::read(&c).expect("c"), bytes_a);
    // Without SOURCE_DATE_EPOCH the header differs (time, build id, salt), the plaintexts do not.
    let (d, e) = (tmp.path().join("d.lore"), tmp.path().join("e.lore"));
    build_with(&kb, &d, false, false, None);
    build_with(&kb, &e, false, false, None);
    assert_ne!(std::fs::read(&d).expect("d"), std::fs::read(&e).expect("e"));
    assert_eq!(section_hashes(&d), section_hashes(&e));
}

fn verify_sources(art: &Path, dir: &Path) -> Run {
    run(lorec().arg("verify").arg(art).arg("--sources").arg(dir).env("LORE_KEY", TEST_KEY))
}

#[test]
fn verify_sources_names_edited_added_and_removed_files() {
    let tmp = TempDir::new("repro-verify");
    let kb = tmp.path().join("kb");
    copy_dir(&workspace().join("data"), &kb);
    std::fs::create_dir_all(kb.join("secret")).expect("mkdir");
    std::fs::write(kb.join("secret/plans.yaml"), "plans:\n- id: p\n  title: A private plan\n  visibility: private\n")
        .expect("write");
    let art = tmp.path().join("kb.lore");
    build(&kb, &art, &[]);
    let ok = verify_sources(&art, &kb);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("1 left out for its audience"), "{}", ok.stdout);
    // Without the key the sealed list cannot be read.
    let keyless = run(lorec().arg("verify").arg(&art).arg("--sources").arg(&kb));
    assert_eq!(keyless.code, 2, "{}", keyless.stderr);
    std::fs::write(kb.join("faq.yaml"), std::fs::read_to_string(kb.join("faq.yaml")).expect("r") + "\n# edited\n")
        .expect("write");
    std::fs::write(kb.join("extra.yaml"), "things:\n- id: x\n  title: Extra\n").expect("write");
    std::fs::remove_file(kb.join("personal/goals.yaml")).expect("remove");
    std::fs::write(kb.join("secret/plans.yaml"), "plans: []\n").expect("write");
    let bad = verify_sources(&art, &kb);
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    for line in [
        "changed  faq.yaml",
        "added    extra.yaml",
        "missing  personal/goals.yaml",
        "1 source file(s) this build left out",
    ] {
        assert!(bad.stdout.contains(line), "no `{line}` in:\n{}", bad.stdout);
    }
}
