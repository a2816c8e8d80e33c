//! Document collections: JSON Lines (BEIR format), Markdown split at headings, YAML document
//! lists, and long texts split into passages that keep their document id.

use crate::support::*;

fn long_text(topic: &str, sentences: usize) -> String {
    (0..sentences).map(|i| format!("Finding {i} about {topic} was replicated in cohort {i}. ")).collect()
}

#[test]
fn jsonl_markdown_and_yaml_documents_compile_and_answer_with_doc_ids() {
    let tmp = TempDir::new("docs");
    let lines = [
        serde_json::json!({"_id": "101", "title": "Tidal locking of moons", "text": "Most large moons are tidally locked to their planet."}),
        serde_json::json!({"id": 202, "title": "Lighthouse optics", "text": long_text("Fresnel lenses", 80)}),
        serde_json::json!({"_id": "303", "text": "Sourdough starters need regular feeding."}),
    ];
    tmp.write("kb/corpus.jsonl", lines.iter().map(|l| l.to_string() + "\n").collect::<String>());
    tmp.write("kb/guide.md", "Lore guide.\n\n# Install\nDownload the binary.\n## Linux\nUse the static build on any distribution.\n# Serve\nRun lore serve with an artifact.\n");
    tmp.write("kb/notes.yaml", "docs:\n  - id: n1\n    title: Glacier walking\n    text: Crampons and a rope team are essential on crevassed glaciers.\n    tags: [alpine]\n");
    let out = tmp.path().join("docs.lore");
    build(&tmp.path().join("kb"), &out, &[]);

    let a = ask(&out, "Are large moons tidally locked?", 3);
    assert_eq!(a["hits"][0]["id"], "corpus.jsonl#/101");
    assert_eq!(a["hits"][0]["doc"], "101");

    let a = ask(&out, "Fresnel lenses finding 63 cohort 63", 3);
    let top = &a["hits"][0];
    assert_eq!(top["doc"], "202", "{a}");
    assert!(top["id"].as_str().is_some_and(|id| id.starts_with("corpus.jsonl#/202/passages/")), "{top}");
    assert!(top["text"].as_str().is_some_and(|t| t.starts_with("Lighthouse optics\n") && t.len() <= 1800), "{top}");

    let a = ask(&out, "static build for linux distributions", 3);
    assert_eq!(a["hits"][0]["id"], "guide.md#/Install/Linux", "{a}");
    assert_eq!(a["hits"][0]["title"], "Linux");

    let a = ask(&out, "what do I need to walk on a glacier with crevasses?", 3);
    assert_eq!(a["hits"][0]["id"], "notes.yaml#/docs/0", "{a}");
    assert_eq!(a["hits"][0]["doc"], "notes.yaml#/docs/0");
}

#[test]
fn malformed_jsonl_is_reported_per_line() {
    let kb = TempDir::new("bad");
    kb.write(
        "c.jsonl",
        "{\"_id\": \"1\", \"text\": \"ok\"}\n{\"_id\": \"2\", \"text\": \"unclosed\n{\"title\": \"no id\", \"text\": \"x\"}\n{\"_id\": \"1\", \"text\": \"again\"}\n{\"_id\": \"5\", \"title\": \"no text\"}\n[1, 2]\n",
    );
    let r = run(lorec().arg("check").arg(kb.path()));
    assert_eq!(r.code, 2);
    insta::assert_snapshot!("malformed_jsonl", r.stderr);
}

#[test]
fn malformed_markdown_front_matter_is_reported() {
    let kb = TempDir::new("bad");
    kb.write("a.md", "---\nvisibility: secret\n---\n# A\ntext\n");
    kb.write("b.md", "---\ntitle: never closed\n# B\ntext\n");
    let r = run(lorec().arg("check").arg(kb.path()));
    assert_eq!(r.code, 2);
    insta::assert_snapshot!("malformed_markdown", r.stderr);
}
