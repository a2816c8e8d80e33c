//! Document collections in JSON Lines (the BEIR corpus format): one document per line with
//! `_id` or `id`, optional `title`, `text`, optional `tags` and `visibility`.

use std::collections::HashMap;

use format::Visibility;

use crate::chunk::Chunk;
use crate::diag::{Diagnostic, Pos};

/// serde_json's message without its trailing "at line 1 column N", which would name the
/// wrong line: each document is parsed on its own.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

pub fn compile(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let section = file.rsplit('/').next().unwrap_or(file).trim_end_matches(".jsonl").to_string();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |col: usize| Pos { line: line_no, col };
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        "syntax",
                        file,
                        at(e.column().max(1)),
                        format!("invalid JSON: {}", without_position(&e)),
                    )
                    .label("the JSON parser stopped here")
                    .hint("every line of a .jsonl file must be one JSON object"),
                );
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            diags.push(
                Diagnostic::error("invalid-document", file, at(1), "a JSON Lines document must be an object")
                    .label("expected `{`"),
            );
            continue;
        };
        let id = match obj.get("_id").or_else(|| obj.get("id")) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                diags.push(
                    Diagnostic::error("missing-id", file, at(1), "document has no `_id` or `id`")
                        .label("this document")
                        .hint("give every line a unique string `_id` (or `id`)"),
                );
                continue;
            }
        };
        if let Some(first) = seen.get(&id) {
            diags.push(
                Diagnostic::error(
                    "duplicate-id",
                    file,
                    at(1),
                    format!("document id `{}` is used twice in this file", crate::diag::excerpt(&id)),
                )
                .label("second use")
                .also(file, *first, "first used here"),
            );
            continue;
        }
        seen.insert(id.clone(), at(1));
        let title = obj.get("title").and_then(|t| t.as_str()).unwrap_or("").trim().to_string();
        let body = match obj.get("text") {
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            _ => {
                diags.push(
                    Diagnostic::error(
                        "missing-text",
                        file,
                        at(1),
                        format!("document `{}` has no string `text`", crate::diag::excerpt(&id)),
                    )
                    .label("this document"),
                );
                continue;
            }
        };
        if title.is_empty() && body.is_empty() {
            diags.push(Diagnostic::warning(
                "empty-document",
                file,
                at(1),
                format!("document `{}` has neither title nor text", crate::diag::excerpt(&id)),
            ));
            continue;
        }
        let tags = obj
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let visibility = match obj.get("visibility").and_then(|v| v.as_str()) {
            None | Some("public") => Visibility::Public,
            Some("internal") => Visibility::Internal,
            Some("private") => Visibility::Private,
            Some(other) => {
                diags.push(
                    Diagnostic::error(
                        "invalid-visibility",
                        file,
                        at(1),
                        format!("`visibility` must be public, internal or private, not `{other}`"),
                    )
                    .label("in this document"),
                );
                continue;
            }
        };
        let pointer = format!("/{}", id.replace('~', "~0").replace('/', "~1"));
        chunks.push(Chunk {
            id: format!("{file}#{pointer}"),
            doc: id.clone(),
            path: pointer,
            title: if title.is_empty() { id.clone() } else { title.clone() },
            section: section.clone(),
            tags,
            visibility,
            text: if title.is_empty() { body } else { format!("{title}\n{body}") },
            facets: Vec::new(),
            pos: at(1),
        });
    }
    chunks
}
