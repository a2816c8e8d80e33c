//! `lorec diff A B`: chunks added, removed and changed by id, with line diffs; exit 0 when
//! equal, 1 when different, 2 on bad input; `--json` for machines.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Build `dir` reproducibly (fixed time, so the build id in the output is stable).
fn build_at(dir: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let r = run(lorec()
        .arg("build")
        .arg(dir)
        .arg("-o")
        .arg(out)
        .arg("--model")
        .arg(model_dir())
        .arg("--no-cache")
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 0, "{}", r.stderr);
    out.to_path_buf()
}

fn diff(a: &Path, b: &Path, extra: &[&str]) -> Run {
    run(lorec().arg("diff").arg(a).arg(b).args(extra).env("LORE_KEY", TEST_KEY))
}

#[test]
fn diff_names_what_was_added_removed_and_changed() {
    let tmp = TempDir::new("diff");
    let write_kb = |name: &str, files: &[(&str, &str)]| {
        for (file, body) in files {
            tmp.write(&format!("{name}/{file}"), body);
        }
        tmp.path().join(name)
    };
    let keeper = "profile:\n  name: Ada Keeper\n  role: Lighthouse keeper\n  based_in: Harbour Town\n";
    let books = "books:\n  - title: To the Lighthouse\n    author: Virginia Woolf\n";
    let hobbies = "hobbies:\n  - knot tying\n  - reading tide tables\n";
    let a = write_kb("a", &[("about.yaml", keeper), ("books.yaml", books), ("hobbies.yaml", hobbies)]);
    let b = write_kb(
        "b",
        &[
            ("about.yaml", &keeper.replace("Harbour Town", "North Cape")),
            ("hobbies.yaml", hobbies),
            ("boats.yaml", "boats:\n  - name: Storm Petrel\n    kind: rowing boat\n"),
        ],
    );
    let art_a = build_at(&a, &tmp.path().join("a.lore"), &[]);
    let art_a2 = build_at(&a, &tmp.path().join("a2.lore"), &["--artifact-version", "2"]);
    let art_b = build_at(&b, &tmp.path().join("b.lore"), &[]);

    let same = diff(&art_a, &art_a2, &[]);
    assert_eq!(same.code, 0, "a new build of the same sources is equal:\n{}{}", same.stdout, same.stderr);
    assert!(same.stdout.contains("equal: 0 added, 0 removed, 0 changed"), "{}", same.stdout);

    let different = diff(&art_a, &art_b, &[]);
    assert_eq!(different.code, 1, "{}", different.stderr);
    // Build ids are derived from content (reproducible builds), but name the compiler version.
    let shown: String = different
        .stdout
        .lines()
        .map(|l| match l.split_once(" (build ") {
            Some((head, _)) if l.starts_with("a: ") || l.starts_with("b: ") => format!("{head} (build [id])\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    insta::assert_snapshot!("diff_text", shown);

    let json = diff(&art_a, &art_b, &["--json"]);
    assert_eq!(json.code, 1);
    let d: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(d["equal"], false);
    assert_eq!(d["added"][0]["id"], "boats.yaml#/boats/0");
    assert_eq!(d["removed"][0]["id"], "books.yaml#/books/0");
    assert_eq!(d["changed"][0]["id"], "about.yaml#/profile");
    assert!(d["changed"][0]["diff"].as_str().expect("diff").contains("+Based in: North Cape"), "{d}");

    // A different audience or embedder settings show as header changes.
    let internal = build_at(&a, &tmp.path().join("internal.lore"), &["--audience", "internal"]);
    let r = diff(&art_a, &internal, &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("audience: public → internal"), "{}", r.stdout);
}

#[test]
fn diff_of_bad_input_exits_2() {
    let tmp = TempDir::new("diff-bad");
    let art = tmp.path().join("a.lore");
    build(&workspace().join("tests/compat/kb"), &art, &[]);
    let missing = diff(&art, &tmp.path().join("nope.lore"), &[]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    let not_artifact = tmp.write("x.lore", "not an artifact");
    assert_eq!(diff(&art, &not_artifact, &[]).code, 2);
    let wrong_key = run(lorec().arg("diff").arg(&art).arg(&art).env("LORE_KEY", OTHER_KEY));
    assert_eq!(wrong_key.code, 2, "{}", wrong_key.stderr);
    assert!(wrong_key.stderr.contains("wrong key"), "{}", wrong_key.stderr);
}
