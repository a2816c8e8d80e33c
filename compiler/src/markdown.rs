//! Markdown documents, split at ATX headings (`#` … `######`). Each section is a chunk whose
//! id is the file plus its heading path, e.g. `guide.md#/Install/Linux`.

use format::Visibility;

use crate::chunk::Chunk;
use crate::diag::{Diagnostic, Pos};

pub fn compile(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<Chunk> {
    let (visibility, body_start) = front_matter(file, text, diags);
    let stem =
        file.rsplit('/').next().unwrap_or(file).trim_end_matches(".md").trim_end_matches(".markdown").to_string();
    let mut chunks = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut current = Section { heading_line: body_start + 1, lines: Vec::new() };
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate().skip(body_start) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        let level = if in_fence { 0 } else { heading_level(trimmed) };
        if level == 0 {
            current.lines.push(line);
            continue;
        }
        emit(file, &stem, &path, &current, visibility, &mut chunks);
        let title = trimmed[level..].trim().trim_end_matches('#').trim().to_string();
        path.retain(|(l, _)| *l < level);
        path.push((level, title));
        current = Section { heading_line: n + 1, lines: Vec::new() };
    }
    emit(file, &stem, &path, &current, visibility, &mut chunks);
    let mut seen = std::collections::HashMap::new();
    for c in &mut chunks {
        // Two sections with the same heading path get distinct ids: `…/Setup`, `…/Setup~2`.
        let count = seen.entry(c.id.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            c.id = format!("{}~{count}", c.id);
            c.path = format!("{}~{count}", c.path);
            c.doc = c.id.clone();
        }
    }
    chunks
}

struct Section<'a> {
    heading_line: usize,
    lines: Vec<&'a str>,
}

fn heading_level(line: &str) -> usize {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with([' ', '\t']) { hashes } else { 0 }
}

fn emit(
    file: &str,
    stem: &str,
    path: &[(usize, String)],
    section: &Section<'_>,
    visibility: Visibility,
    out: &mut Vec<Chunk>,
) {
    let body = section.lines.join("\n").trim().to_string();
    if body.is_empty() {
        return;
    }
    let pointer: String = path.iter().map(|(_, t)| format!("/{}", t.replace('~', "~0").replace('/', "~1"))).collect();
    let title = path.last().map_or_else(|| stem.to_string(), |(_, t)| t.clone());
    let breadcrumb = path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" › ");
    let head = if breadcrumb.is_empty() { title.clone() } else { breadcrumb };
    let id = format!("{file}#{}", if pointer.is_empty() { "/" } else { &pointer });
    out.push(Chunk {
        doc: id.clone(),
        id,
        path: if pointer.is_empty() { "/".into() } else { pointer },
        title,
        section: path.iter().rev().skip(1).rev().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("/"),
        tags: Vec::new(),
        visibility,
        text: format!("{head}\n{body}"),
        facets: Vec::new(),
        pos: Pos { line: section.heading_line, col: 1 },
    });
}

/// A leading `---` block may set `visibility:` for the whole file; other keys are ignored.
fn front_matter(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> (Visibility, usize) {
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return (Visibility::Public, 0);
    }
    let mut visibility = Visibility::Public;
    for (n, line) in lines.enumerate() {
        let line_no = n + 2;
        if line.trim_end() == "---" {
            return (visibility, line_no);
        }
        if let Some(v) = line.strip_prefix("visibility:") {
            visibility = match v.trim() {
                "public" => Visibility::Public,
                "internal" => Visibility::Internal,
                "private" => Visibility::Private,
                other => {
                    diags.push(
                        Diagnostic::error(
                            "invalid-visibility",
                            file,
                            Pos { line: line_no, col: 13 },
                            format!("`visibility` must be public, internal or private, not `{other}`"),
                        )
                        .label("unknown visibility"),
                    );
                    Visibility::Public
                }
            };
        }
    }
    diags.push(
        Diagnostic::error("syntax", file, Pos { line: 1, col: 1 }, "front matter opened with `---` is never closed")
            .label("opened here"),
    );
    (visibility, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_headings_with_paths() {
        let mut d = Vec::new();
        let md = "Intro text.\n\n# Install\nGet it.\n## Linux\napt install lore\n```\n# not a heading\n```\n## Linux\nAgain.\n# Use\nRun it.\n";
        let chunks = compile("guide.md", md, &mut d);
        assert!(d.is_empty());
        let ids: Vec<_> = chunks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "guide.md#/",
                "guide.md#/Install",
                "guide.md#/Install/Linux",
                "guide.md#/Install/Linux~2",
                "guide.md#/Use"
            ]
        );
        assert!(chunks[2].text.contains("# not a heading"));
        assert_eq!(chunks[2].text.lines().next(), Some("Install › Linux"));
    }

    #[test]
    fn front_matter_sets_visibility() {
        let mut d = Vec::new();
        let chunks = compile("a.md", "---\nvisibility: internal\n---\n# A\nx\n", &mut d);
        assert_eq!(chunks[0].visibility, Visibility::Internal);
        assert_eq!(chunks[0].pos.line, 4);
    }
}
