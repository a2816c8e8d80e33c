//! Validation and chunking of one parsed source file: entities in, readable chunks out.
//!
//! A chunk is an entity, not a leaf: a mapping inside a list (a job, a feature, a book), a
//! mapping of plain fields (a profile), or a list of plain values (a list of hobbies). Its id is
//! `file#/json/pointer`, so ids only change when the entity moves.
//!
//! The walks here recurse once per level of the tree; `yaml::parse` never builds one deeper
//! than [`crate::yaml::MAX_DEPTH`], which bounds their stack use.

use std::collections::HashMap;

use format::Visibility;

use crate::diag::{Diagnostic, Pos, excerpt};
use crate::yaml::{Node, Value};

/// Bump when chunk ids, titles or texts change for the same input, to invalidate build caches.
pub const CHUNKER_VERSION: u32 = 3;

/// Most facets one entity gets; an entity with more fields keeps the first ones.
pub const MAX_FACETS: usize = 48;

/// Top-level keys that describe the file instead of holding content.
const METADATA_KEYS: &[&str] = &["metadata", "meta", "$schema"];
/// RenderCV files keep the résumé under `cv`; these siblings configure the PDF (theme,
/// fonts, date formats) and say nothing about the person.
const RENDERCV_SETTINGS_KEYS: &[&str] = &["design", "locale", "locale_catalog", "settings", "rendercv_settings"];
/// Generated link tables: they repeat what the real entities say and would drown them.
const GENERATED_KEYS: &[&str] = &["cross_references"];
/// Fields that become chunk metadata rather than text.
const META_FIELDS: &[&str] = &["id", "visibility", "tags"];
/// Fields that name an entity, best first.
const TITLE_FIELDS: &[&str] = &[
    "title",
    "name",
    "question",
    "value",
    "trait",
    "goal",
    "interest",
    "language",
    "genre",
    "skill",
    "institution",
    "organization",
    "area",
    "topic",
    "project",
    "id",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: String,
    /// The document this chunk belongs to: the entity's own id for YAML, the line's `_id`
    /// for JSON Lines; passages of one document share it.
    pub doc: String,
    pub path: String,
    pub title: String,
    pub section: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    pub text: String,
    /// The entity's fields one by one (a list field one item at a time), each after the
    /// chunk's first line: embedded beside the whole text so that a question about one fact
    /// meets a vector that is not averaged with a dozen others. Empty when the entity has one
    /// field or is a passage of prose.
    pub facets: Vec<String>,
    pub pos: Pos,
}

struct Ctx<'a> {
    file: &'a str,
    file_tags: Vec<String>,
    file_visibility: Visibility,
    chunks: Vec<Chunk>,
    diags: &'a mut Vec<Diagnostic>,
    ids: HashMap<String, Pos>,
}

/// Validate `root` and cut it into chunks. Problems go to `diags`; chunking goes on regardless,
/// so one run reports everything.
pub fn chunk_file(file: &str, root: &Node, diags: &mut Vec<Diagnostic>) -> Vec<Chunk> {
    let mut ctx = Ctx {
        file,
        file_tags: Vec::new(),
        file_visibility: Visibility::Public,
        chunks: Vec::new(),
        diags,
        ids: HashMap::new(),
    };
    // RenderCV's PDF settings are neither content nor ours to validate (`current_date: today`).
    let rendercv = match &root.value {
        Value::Map(entries) => {
            entries.iter().any(|(k, v)| k.as_str() == Some("cv") && matches!(v.value, Value::Map(_)))
        }
        _ => false,
    };
    match &root.value {
        Value::Map(entries) if rendercv => {
            let content = entries
                .iter()
                .filter(|(k, _)| !k.as_str().is_some_and(|name| RENDERCV_SETTINGS_KEYS.contains(&name)))
                .cloned()
                .collect();
            validate(&mut ctx, &Node { value: Value::Map(content), pos: root.pos }, None);
        }
        _ => validate(&mut ctx, root, None),
    }
    match &root.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let Some(name) = key.as_str() else { continue };
                if METADATA_KEYS.contains(&name) {
                    if let Some(tags) = value.get("tags") {
                        ctx.file_tags = scalars(tags);
                    }
                    if let Some(v) = value.get("visibility").and_then(parse_visibility) {
                        ctx.file_visibility = v;
                    }
                }
            }
            let default = ctx.file_visibility;
            for (key, value) in entries {
                let Some(name) = key.as_str() else { continue };
                if METADATA_KEYS.contains(&name)
                    || GENERATED_KEYS.contains(&name)
                    || (rendercv && RENDERCV_SETTINGS_KEYS.contains(&name))
                {
                    continue;
                }
                walk(&mut ctx, value, &[name.to_string()], default, false);
            }
        }
        Value::Seq(_) => {
            let default = ctx.file_visibility;
            walk(&mut ctx, root, &[], default, false)
        }
        Value::Scalar { .. } => {}
    }
    ctx.chunks
}

fn walk(ctx: &mut Ctx<'_>, node: &Node, path: &[String], inherited: Visibility, in_list: bool) {
    let visibility = node.get("visibility").and_then(parse_visibility).unwrap_or(inherited);
    match &node.value {
        Value::Map(entries) => {
            let is_record = entries.iter().all(|(_, v)| is_plain(v));
            if in_list || is_record {
                emit(ctx, node, path, visibility);
                return;
            }
            // A mapping of groups: its plain fields form one chunk, its groups are walked.
            if entries.iter().any(|(k, v)| is_plain(v) && !META_FIELDS.contains(&k.as_str().unwrap_or(""))) {
                let plain: Vec<(Node, Node)> = entries.iter().filter(|(_, v)| is_plain(v)).cloned().collect();
                emit(ctx, &Node { value: Value::Map(plain), pos: node.pos }, path, visibility);
            }
            for (key, value) in entries {
                if is_plain(value) {
                    continue;
                }
                let Some(name) = key.as_str() else { continue };
                if GENERATED_KEYS.contains(&name) {
                    continue;
                }
                let mut child = path.to_vec();
                child.push(name.to_string());
                walk(ctx, value, &child, visibility, false);
            }
        }
        Value::Seq(items) => {
            if items.iter().all(|i| matches!(i.value, Value::Scalar { .. })) {
                if items.iter().any(|i| !i.is_null()) {
                    emit(ctx, node, path, visibility);
                }
                return;
            }
            for (i, item) in items.iter().enumerate() {
                let mut child = path.to_vec();
                child.push(i.to_string());
                match &item.value {
                    Value::Scalar { .. } => {}
                    _ => walk(ctx, item, &child, visibility, true),
                }
            }
        }
        Value::Scalar { .. } => {
            if !node.is_null() {
                emit(ctx, node, path, visibility);
            }
        }
    }
}

/// A scalar, or a list of scalars: something that reads as one field.
fn is_plain(node: &Node) -> bool {
    match &node.value {
        Value::Scalar { .. } => true,
        Value::Seq(items) => items.iter().all(|i| matches!(i.value, Value::Scalar { .. })),
        Value::Map(_) => false,
    }
}

fn emit(ctx: &mut Ctx<'_>, node: &Node, path: &[String], visibility: Visibility) {
    let pointer: String = path.iter().map(|p| format!("/{}", escape_pointer(p))).collect();
    let section_parts: Vec<&str> = path.iter().map(String::as_str).filter(|p| p.parse::<usize>().is_err()).collect();
    let section = section_parts.join("/");
    let breadcrumb = section_parts.iter().map(|p| humanize(p)).collect::<Vec<_>>().join(" › ");
    let title = title_of(node).unwrap_or_else(|| match section_parts.last() {
        Some(last) => humanize(last),
        None => humanize(ctx.file.rsplit('/').next().unwrap_or(ctx.file)),
    });
    let tags = match node.get("tags") {
        Some(tags) => scalars(tags),
        None => ctx.file_tags.clone(),
    };
    let mut text = String::new();
    if breadcrumb.is_empty() {
        text.push_str(&title);
    } else {
        text.push_str(&format!("{breadcrumb}: {title}"));
    }
    let facets = facets_of(node, &text);
    text.push('\n');
    render(node, 0, &mut text);
    if let Some(tags) = node.get("tags") {
        let tags = scalars(tags);
        if !tags.is_empty() {
            text.push_str(&format!("Tags: {}\n", tags.join(", ")));
        }
    }
    let id = format!("{}#{}", ctx.file, pointer);
    ctx.chunks.push(Chunk {
        doc: id.clone(),
        id,
        path: if pointer.is_empty() { "/".into() } else { pointer },
        title,
        section,
        tags,
        visibility,
        text: text.trim_end().to_string(),
        facets,
        pos: node.pos,
    });
}

/// `header` followed by each field of `node` alone, a list field one item at a time; empty
/// unless there are at least two (one facet would repeat the whole chunk).
fn facets_of(node: &Node, header: &str) -> Vec<String> {
    let mut facets = Vec::new();
    let mut push = |body: String| {
        let body = body.trim_end();
        if !body.is_empty() && facets.len() < MAX_FACETS {
            facets.push(format!("{header}\n{body}"));
        }
    };
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let Some(name) = key.as_str() else { continue };
                if META_FIELDS.contains(&name) || value.is_null() {
                    continue;
                }
                let label = humanize(name);
                match &value.value {
                    Value::Seq(items) if items.len() > 1 => {
                        for item in items {
                            let mut body = format!("{label}:\n");
                            render(item, 1, &mut body);
                            push(body);
                        }
                    }
                    _ => {
                        let mut body = String::new();
                        render_entry(&label, value, 0, &mut body);
                        push(body);
                    }
                }
            }
        }
        Value::Seq(items) => {
            for item in items {
                let mut body = String::new();
                render(item, 0, &mut body);
                push(body);
            }
        }
        Value::Scalar { .. } => {}
    }
    if facets.len() < 2 {
        facets.clear();
    }
    facets
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn title_of(node: &Node) -> Option<String> {
    let field = |k: &str| node.get(k).and_then(Node::as_str).map(str::trim).filter(|s| !s.is_empty());
    let org = field("company").or_else(|| field("organization")).or_else(|| field("institution"));
    if let (Some(role), Some(org)) = (field("title").or_else(|| field("position")), org) {
        return Some(format!("{role} at {org}"));
    }
    if let (Some(role), Some(org)) = (field("position"), field("name")) {
        return Some(format!("{role} at {org}"));
    }
    TITLE_FIELDS.iter().find_map(|k| field(k)).map(|t| first_line(t, 120))
}

fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= max_chars {
        line.to_string()
    } else {
        let cut: String = line.chars().take(max_chars).collect();
        format!("{}…", cut.trim_end())
    }
}

/// `responsibilities` → `Responsibilities`, `startDate` → `Start date`.
pub fn humanize(key: &str) -> String {
    let mut words = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' {
            words.push(' ');
            prev_lower = false;
        } else if c.is_uppercase() && prev_lower {
            words.push(' ');
            words.extend(c.to_lowercase());
            prev_lower = false;
        } else {
            words.push(c);
            prev_lower = c.is_lowercase();
        }
    }
    let mut chars = words.trim().chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn render(node: &Node, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match &node.value {
        Value::Scalar { text, .. } => {
            if !node.is_null() {
                out.push_str(&format!("{indent}{}\n", text.trim()));
            }
        }
        Value::Seq(items) => {
            if is_plain(node) {
                let values = scalars(node);
                if !values.is_empty() {
                    out.push_str(&format!("{indent}{}\n", values.join(", ")));
                }
            } else {
                for item in items {
                    match &item.value {
                        Value::Map(_) => {
                            out.push_str(&format!("{indent}-\n"));
                            render(item, depth + 1, out);
                        }
                        _ => render(item, depth, out),
                    }
                }
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let Some(name) = key.as_str() else { continue };
                if META_FIELDS.contains(&name) || value.is_null() {
                    continue;
                }
                render_entry(&humanize(name), value, depth, out);
            }
        }
    }
}

/// One `label: value` field of a mapping, as [`render`] writes it.
fn render_entry(label: &str, value: &Node, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match &value.value {
        Value::Scalar { text, .. } => {
            let text = text.trim().replace('\n', " ");
            out.push_str(&format!("{indent}{label}: {text}\n"));
        }
        Value::Seq(_) if is_plain(value) => {
            let values = scalars(value);
            if !values.is_empty() {
                out.push_str(&format!("{indent}{label}: {}\n", values.join(", ")));
            }
        }
        _ => {
            out.push_str(&format!("{indent}{label}:\n"));
            render(value, depth + 1, out);
        }
    }
}

/// The non-null scalar texts of a scalar or a list of scalars.
fn scalars(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => vec![text.trim().to_string()],
        Value::Seq(items) => items.iter().filter_map(Node::as_str).map(|s| s.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

fn parse_visibility(node: &Node) -> Option<Visibility> {
    match node.as_str()? {
        "public" => Some(Visibility::Public),
        "internal" => Some(Visibility::Internal),
        "private" => Some(Visibility::Private),
        _ => None,
    }
}

fn is_date_field(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "date" || k.ends_with("_date") || k.ends_with("date") && key.ends_with("Date") || k == "last_updated"
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` with a real month and day, or an open end.
pub fn is_valid_date(text: &str) -> bool {
    let t = text.trim();
    if matches!(t.to_ascii_lowercase().as_str(), "present" | "current" | "now" | "ongoing") {
        return true;
    }
    let parts: Vec<&str> = t.split('-').collect();
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten()
    };
    match parts.as_slice() {
        [y] => num(y, 4).is_some(),
        [y, m] => num(y, 4).is_some() && num(m, 2).is_some_and(|m| (1..=12).contains(&m)),
        [y, m, d] => match (num(y, 4), num(m, 2), num(d, 2)) {
            (Some(y), Some(m), Some(d)) if (1..=12).contains(&m) => {
                let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
                let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
                (1..=days).contains(&d)
            }
            _ => false,
        },
        _ => false,
    }
}

/// Checks that do not depend on chunking: known fields' types, empty and repeated list items,
/// ids unique within the file.
fn validate(ctx: &mut Ctx<'_>, node: &Node, key: Option<&str>) {
    let file = ctx.file;
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let Some(name) = k.as_str() else { continue };
                if GENERATED_KEYS.contains(&name) {
                    continue;
                }
                match name {
                    "visibility" if parse_visibility(v).is_none() => ctx.diags.push(
                        Diagnostic::error(
                            "invalid-visibility",
                            file,
                            v.pos,
                            format!("`visibility` must be public, internal or private, not {}", describe(v)),
                        )
                        .label("unknown visibility")
                        .hint("entities are public unless marked `internal` or `private`"),
                    ),
                    "id" => match v.as_str() {
                        Some(id) => {
                            if let Some(first) = ctx.ids.get(id) {
                                ctx.diags.push(
                                    Diagnostic::error(
                                        "duplicate-id",
                                        file,
                                        v.pos,
                                        format!("id `{}` is used twice in this file", excerpt(id)),
                                    )
                                    .label("second use")
                                    .also(file, *first, "first used here")
                                    .hint("ids must be unique within a file; rename one of them"),
                                );
                            } else {
                                ctx.ids.insert(id.to_string(), v.pos);
                            }
                        }
                        None => ctx.diags.push(
                            Diagnostic::error(
                                "invalid-id",
                                file,
                                v.pos,
                                format!("`id` must be a string, not {}", describe(v)),
                            )
                            .label("expected a string"),
                        ),
                    },
                    "tags" if !is_plain(v) => ctx.diags.push(
                        Diagnostic::error(
                            "invalid-tags",
                            file,
                            v.pos,
                            format!("`tags` must be a list of strings, not {}", describe(v)),
                        )
                        .label("expected a list of strings"),
                    ),
                    _ if is_date_field(name) => match v.as_str() {
                        Some(text) if is_valid_date(text) => {}
                        _ if v.is_null() => {}
                        _ => ctx.diags.push(
                            Diagnostic::error(
                                "invalid-date",
                                file,
                                v.pos,
                                format!("`{}` must be a date, not {}", excerpt(name), describe(v)),
                            )
                            .label("not a date")
                            .hint("write YYYY, YYYY-MM or YYYY-MM-DD (or `present` for an open end)"),
                        ),
                    },
                    _ => {}
                }
                validate(ctx, v, Some(name));
            }
        }
        Value::Seq(items) => {
            let mut seen: HashMap<&str, Pos> = HashMap::new();
            for item in items {
                if item.is_null() && matches!(&item.value, Value::Scalar { text, .. } if text.is_empty()) {
                    let what = key.map(|k| format!(" in `{k}`")).unwrap_or_default();
                    ctx.diags.push(
                        Diagnostic::error("empty-list-item", file, item.pos, format!("empty list item{what}"))
                            .label("expected a value here")
                            .hint("remove the line or write the missing value"),
                    );
                    continue;
                }
                if let Some(text) = item.as_str() {
                    match seen.get(text) {
                        Some(first) => ctx.diags.push(
                            Diagnostic::warning(
                                "duplicate-list-entry",
                                file,
                                item.pos,
                                format!("`{}` is listed twice", first_line(text, 60)),
                            )
                            .label("repeated here")
                            .also(file, *first, "first listed here")
                            .hint("remove the repeated entry"),
                        ),
                        None => {
                            seen.insert(text, item.pos);
                        }
                    }
                }
                validate(ctx, item, key);
            }
        }
        Value::Scalar { .. } => {}
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => format!("`{}`", first_line(text, 40)),
        _ => format!("a {}", node.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in ["2025", "2025-07", "2024-02-29", "present"] {
            assert!(is_valid_date(ok), "{ok}");
        }
        for bad in ["2023-02-29", "2025-13", "July 2025", "25-07", "2025-7"] {
            assert!(!is_valid_date(bad), "{bad}");
        }
    }

    #[test]
    fn humanizes_keys() {
        assert_eq!(humanize("work_experience"), "Work experience");
        assert_eq!(humanize("startDate"), "Start date");
    }
}
