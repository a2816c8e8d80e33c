//! Bad input: every defect reported at once, rustc-style, with exit status 2 and no output.

use crate::support::*;

/// Check a knowledge base made of `files`; returns the run.
fn check(files: &[(&str, &[u8])]) -> Run {
    let kb = TempDir::new("kb");
    for (name, body) in files {
        kb.write(name, body);
    }
    run(lorec().arg("check").arg(kb.path()))
}

fn rejected(name: &str, files: &[(&str, &[u8])]) {
    let r = check(files);
    assert_eq!(r.code, 2, "{name}: expected rejection, got:\n{}", r.stderr);
    insta::assert_snapshot!(name, r.stderr);
}

#[test]
fn seed_kb_merged_job_is_reported_with_every_location() {
    let r = run(lorec().arg("check").arg(shared().join("fixtures/seed-kb")));
    assert_eq!(r.code, 2);
    // The Autodesk job lost its `- ` and merged into the realtor job: the Python app kept the
    // last value of each key and silently dropped the realtor entry.
    assert!(r.stderr.contains("--> career/work_experience.yaml:77:3"), "{}", r.stderr);
    assert!(r.stderr.contains("::: career/work_experience.yaml:46:3"), "{}", r.stderr);
    insta::assert_snapshot!("seed_kb", r.stderr);
}

#[test]
fn seed_kb_with_the_defect_fixed_compiles() {
    let tmp = TempDir::new("seed");
    let kb = fixed_seed_kb(&tmp);
    let r = run(lorec().arg("check").arg(&kb));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The duplicated list entries are only warnings...
    assert!(r.stderr.contains("warning[duplicate-list-entry]"), "{}", r.stderr);
    // ...unless warnings are denied.
    let denied = run(lorec().arg("check").arg(&kb).args(["--deny", "warnings"]));
    assert_eq!(denied.code, 2, "{}", denied.stderr);
    assert!(denied.stderr.contains("warnings denied"), "{}", denied.stderr);
}

#[test]
fn persona_file_with_every_kind_of_mistake() {
    rejected(
        "persona_file_with_every_kind_of_mistake",
        &[
            ("a.yaml", b"hobbies:\n  - chess\n"),
            ("persona.yaml", b"description: [not, text]\ndo: just one\nmood: sunny\nopeners:\n  - fine\n  - {a: 1}\n"),
        ],
    );
}

#[test]
fn syntax_error() {
    rejected("syntax_error", &[("a.yaml", b"jobs:\n  - title: x\n   company: [unclosed\n")]);
}

#[test]
fn duplicate_key() {
    rejected("duplicate_key", &[("a.yaml", b"profile:\n  name: Ada\n  city: Paris\n  name: Grace\n")]);
}

#[test]
fn empty_list_item() {
    rejected("empty_list_item", &[("a.yaml", b"hobbies:\n  - chess\n  -\n  - cello\n")]);
}

#[test]
fn invalid_visibility() {
    rejected("invalid_visibility", &[("a.yaml", b"jobs:\n  - id: a\n    title: Engineer\n    visibility: secret\n")]);
}

#[test]
fn invalid_date() {
    rejected(
        "invalid_date",
        &[("a.yaml", b"jobs:\n  - id: a\n    start_date: 2023-02-30\n  - id: b\n    end_date: last spring\n")],
    );
}

#[test]
fn duplicate_id_in_one_file() {
    rejected("duplicate_id", &[("a.yaml", b"jobs:\n  - id: acme\n    title: A\n  - id: acme\n    title: B\n")]);
}

#[test]
fn invalid_utf8() {
    rejected("invalid_utf8", &[("a.yaml", b"name: caf\xe9\n")]);
}

#[test]
fn wrong_type_for_known_fields() {
    rejected("wrong_types", &[("a.yaml", b"jobs:\n  - id: [1, 2]\n    tags: {a: b}\n")]);
}

#[test]
fn unreadable_file() {
    let kb = TempDir::new("kb");
    kb.write("ok.yaml", "a: b\n");
    std::os::unix::fs::symlink(kb.path().join("missing-target"), kb.path().join("broken.yaml")).expect("symlink");
    let r = run(lorec().arg("check").arg(kb.path()));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("error[unreadable]: cannot read file"), "{}", r.stderr);
    assert!(r.stderr.contains("broken.yaml"), "{}", r.stderr);
}

#[test]
fn every_error_in_every_file_is_reported_at_once() {
    let r = check(&[
        ("a.yaml", b"x:\n  - 1\n  -\n"),
        ("b/c.yaml", b"k: 1\nk: 2\n"),
        ("d.yaml", b"v:\n  - visibility: nope\n"),
    ]);
    assert_eq!(r.code, 2);
    for needle in ["a.yaml:3", "b/c.yaml:2:1", "d.yaml:2:17", "3 error(s)"] {
        assert!(r.stderr.contains(needle), "missing {needle}:\n{}", r.stderr);
    }
}

#[test]
fn failed_build_leaves_the_previous_artifact_untouched() {
    let kb = TempDir::new("kb");
    kb.write("a.yaml", "jobs:\n  - id: a\n    title: Lighthouse keeper\n");
    let out = kb.path().join("out/kb.lore");
    build(kb.path(), &out, &[]);
    let before = std::fs::read(&out).expect("artifact");
    kb.write("a.yaml", "jobs:\n  - id: a\n    title: x\n    title: y\n");
    let r = run(lorec()
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(&out)
        .arg("--model")
        .arg(model_dir())
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no artifact written"), "{}", r.stderr);
    assert_eq!(std::fs::read(&out).expect("artifact"), before);
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().expect("dir"))
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn build_refuses_to_run_without_a_key_unless_asked_for_plaintext() {
    let kb = TempDir::new("kb");
    kb.write("a.yaml", "a: b\n");
    let r = run(lorec()
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(kb.path().join("x.lore"))
        .arg("--model")
        .arg(model_dir()));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no key"), "{}", r.stderr);
    assert!(!kb.path().join("x.lore").exists());
}

#[test]
fn missing_model_gives_a_hint() {
    let kb = TempDir::new("kb");
    kb.write("a.yaml", "a: b\n");
    let r = run(lorec()
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(kb.path().join("x.lore"))
        .arg("--model")
        .arg(kb.path().join("nope"))
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lorec fetch-model"), "{}", r.stderr);
}

#[test]
fn unknown_embedder_and_retrieval_profile_are_named() {
    let kb = TempDir::new("kb");
    kb.write("a.yaml", "a: b\n");
    let out = kb.path().join("x.lore");
    let r = run(lorec()
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(&out)
        .args(["--embedder", "word2vec"])
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown embedder `word2vec`; use potion, minilm or openai:MODEL"), "{}", r.stderr);
    let r = run(lorec()
        .arg("build")
        .arg(kb.path())
        .arg("-o")
        .arg(&out)
        .args(["--retrieval", "fastest"])
        .env("LORE_KEY", TEST_KEY));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown --retrieval profile `fastest`"), "{}", r.stderr);
    assert!(!out.exists());
}

#[test]
fn empty_jsonl_documents_are_a_warning() {
    let kb = TempDir::new("kb");
    kb.write("c.jsonl", "{\"_id\": \"1\", \"text\": \"tides\"}\n{\"_id\": \"2\", \"title\": \"\", \"text\": \"\"}\n");
    let r = run(lorec().arg("check").arg(kb.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warning[empty-document]: document `2` has neither title nor text"), "{}", r.stderr);
    let denied = run(lorec().arg("check").arg(kb.path()).args(["--deny", "warnings"]));
    assert_eq!(denied.code, 2);
}
