//! `persona.yaml` at the root of a knowledge base: who answers (name, self-description, voice,
//! what to do and not do, the refusal line, opening questions). Validated like every other
//! file, with every problem reported at once; it becomes the artifact's persona section, not
//! chunks.

use crate::diag::{Diagnostic, Pos};
use crate::sources::{SourceFile, SourceMap};
use crate::yaml::{self, Node, Value};

/// The file names read as the persona, at the knowledge base's root only.
pub const PERSONA_FILES: &[&str] = &["persona.yaml", "persona.yml"];

/// Longest accepted text of each kind, in characters.
const MAX_NAME: usize = 200;
const MAX_TEXT: usize = 2000;
const MAX_ITEM: usize = 500;
/// Most items in a list field.
const MAX_ITEMS: usize = 20;

const FIELDS: &[&str] = &["name", "description", "voice", "do", "dont", "refusal", "openers"];

pub fn is_persona(rel: &str) -> bool {
    PERSONA_FILES.contains(&rel)
}

fn too_long(file: &str, field: &str, node: &Node, max: usize) -> Diagnostic {
    Diagnostic::error("persona-field", file, node.pos, format!("`{field}` is longer than {max} characters"))
        .label("shorten this")
}

fn text(file: &str, root: &Node, field: &str, max: usize, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let node = root.get(field)?;
    if node.is_null() {
        return None;
    }
    match &node.value {
        Value::Scalar { text, .. } => {
            let t = text.trim().to_string();
            if t.is_empty() {
                diags.push(
                    Diagnostic::error("persona-field", file, node.pos, format!("`{field}` is empty"))
                        .label("write something here, or leave the field out"),
                );
                return None;
            }
            if t.chars().count() > max {
                diags.push(too_long(file, field, node, max));
            }
            Some(t)
        }
        _ => {
            diags.push(
                Diagnostic::error("persona-field", file, node.pos, format!("`{field}` must be text"))
                    .label("expected a string here"),
            );
            None
        }
    }
}

fn list(file: &str, root: &Node, field: &str, diags: &mut Vec<Diagnostic>) -> Vec<String> {
    let Some(node) = root.get(field).filter(|n| !n.is_null()) else { return Vec::new() };
    let Value::Seq(items) = &node.value else {
        diags.push(
            Diagnostic::error("persona-field", file, node.pos, format!("`{field}` must be a list of texts"))
                .label("expected a list here")
                .hint(format!("write `{field}:` then one `- item` per line below it")),
        );
        return Vec::new();
    };
    if items.len() > MAX_ITEMS {
        diags.push(Diagnostic::error(
            "persona-field",
            file,
            node.pos,
            format!("`{field}` has {} items; at most {MAX_ITEMS} are kept", items.len()),
        ));
    }
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            Value::Scalar { text, .. } if !item.is_null() && text.trim().is_empty() => diags.push(
                Diagnostic::error("persona-field", file, item.pos, format!("an item of `{field}` is empty"))
                    .label("write something here, or remove the item"),
            ),
            Value::Scalar { text, .. } if !item.is_null() => {
                if text.chars().count() > MAX_ITEM {
                    diags.push(too_long(file, field, item, MAX_ITEM));
                }
                out.push(text.trim().to_string());
            }
            _ => diags.push(
                Diagnostic::error("persona-field", file, item.pos, format!("every item of `{field}` must be text"))
                    .label("expected a string here"),
            ),
        }
    }
    out
}

/// Validate a persona file; the persona when it has no error.
pub fn compile(source: &SourceFile, map: &mut SourceMap, diags: &mut Vec<Diagnostic>) -> Option<format::Persona> {
    let file = source.rel.as_str();
    let Ok(text) = std::str::from_utf8(&source.bytes) else {
        diags.push(Diagnostic::error("invalid-utf8", file, Pos::NONE, "invalid UTF-8").hint("save the file as UTF-8"));
        return None;
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    map.insert(file, text);
    let before = diags.len();
    let root = yaml::parse(file, text, diags)?;
    let Value::Map(entries) = &root.value else {
        diags.push(
            Diagnostic::error("persona-shape", file, root.pos, "a persona file is a mapping of fields")
                .label("expected `name:`, `description:`, ... here"),
        );
        return None;
    };
    for (key, _) in entries {
        match key.as_str() {
            Some(k) if FIELDS.contains(&k) => {}
            other => diags.push(
                Diagnostic::error(
                    "persona-field",
                    file,
                    key.pos,
                    format!("unknown persona field `{}`", other.unwrap_or("?")),
                )
                .label("not a persona field")
                .hint(format!("the fields are {}", FIELDS.join(", "))),
            ),
        }
    }
    let name = text_field(file, &root, diags);
    let persona = format::Persona {
        name: name.unwrap_or_default(),
        description: self::text(file, &root, "description", MAX_TEXT, diags),
        voice: self::text(file, &root, "voice", MAX_TEXT, diags),
        rules_do: list(file, &root, "do", diags),
        rules_dont: list(file, &root, "dont", diags),
        refusal: self::text(file, &root, "refusal", MAX_TEXT, diags),
        openers: list(file, &root, "openers", diags),
    };
    (diags.len() == before).then_some(persona)
}

fn text_field(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let name = text(file, root, "name", MAX_NAME, diags);
    if name.is_none() && root.get("name").is_none_or(Node::is_null) {
        diags.push(
            Diagnostic::error("persona-name", file, root.pos, "the persona has no `name`")
                .label("add `name: ...` to this file")
                .hint("the name is how the persona introduces itself and how visitors address it"),
        );
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (Option<format::Persona>, Vec<Diagnostic>) {
        let source = SourceFile { rel: "persona.yaml".into(), sha256: [0; 32], bytes: text.as_bytes().to_vec() };
        let mut diags = Vec::new();
        let p = compile(&source, &mut SourceMap::default(), &mut diags);
        (p, diags)
    }

    #[test]
    fn a_full_persona_is_read() {
        let (p, diags) = compile_text(
            "name: Maren\ndescription: Robotics engineer in Lisbon\nvoice: warm, precise\ndo:\n  - cite sources\ndont:\n  - discuss salary\nrefusal: I only talk about my work.\nopeners:\n  - What do you build?\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let p = p.expect("persona");
        assert_eq!(p.name, "Maren");
        assert_eq!(p.rules_dont, ["discuss salary"]);
        assert_eq!(p.openers, ["What do you build?"]);
        assert_eq!(p.refusal.as_deref(), Some("I only talk about my work."));
    }

    #[test]
    fn empty_names_and_items_are_errors() {
        let (p, diags) = compile_text("name: \"  \"\nopeners:\n  - \"\"\n");
        assert!(p.is_none());
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages, ["`name` is empty", "an item of `openers` is empty"], "{diags:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (p, diags) = compile_text("description: [not, text]\ndo: just one\nmood: sunny\n");
        assert!(p.is_none());
        let codes: Vec<(&str, usize)> = diags.iter().map(|d| (d.code.as_ref(), d.primary.pos.line)).collect();
        assert_eq!(
            codes,
            [("persona-field", 3), ("persona-name", 1), ("persona-field", 1), ("persona-field", 2)],
            "{diags:?}"
        );
    }
}
