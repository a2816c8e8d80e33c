//! `lorec diff A B`: what changed between two artifacts. Chunks are matched by their stable
//! id (added, removed, changed with a line diff of the text), and the header fields that
//! change how an artifact answers are compared (version, format, embedder, audience, fusion
//! profile, facet weight).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use format::schema::{ChunkRecord, Header};
use format::verify::Contents;
use serde::Serialize;

/// One changed header field, as (A, B).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkRef {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedChunk {
    pub id: String,
    pub title: String,
    /// A unified line diff of the chunk's text (title, fields and visibility included).
    pub diff: String,
}

/// The difference between two artifacts; empty when they say the same.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub equal: bool,
    /// The two artifacts' own version labels and build ids (shown, not compared: a new build
    /// of the same sources is equal).
    pub a: String,
    pub b: String,
    pub header: Vec<FieldChange>,
    pub added: Vec<ChunkRef>,
    pub removed: Vec<ChunkRef>,
    pub changed: Vec<ChangedChunk>,
    pub unchanged: usize,
}

/// What of a chunk is compared: everything a reader sees of it.
fn rendered(c: &ChunkRecord) -> String {
    let mut s = format!("{}\n", c.text);
    if !c.tags.is_empty() {
        let _ = writeln!(s, "[tags: {}]", c.tags.join(", "));
    }
    let _ = writeln!(s, "[visibility: {:?}]", c.visibility);
    s
}

fn header_fields(h: &Header, format_version: u32, c: &Contents) -> Vec<(&'static str, String)> {
    vec![
        ("format", format_version.to_string()),
        ("embedder", format!("{} {} ({} dims)", h.embedder.kind, h.embedder.id, h.embedder.dims)),
        ("audience", h.audience.clone()),
        (
            "profile",
            format!(
                "k1 {} b {} dense {} bm25 {} bm25_full {}",
                c.fusion.k1, c.fusion.b, c.fusion.dense_weight, c.fusion.bm25_weight, c.fusion.bm25_weight_full
            ),
        ),
        ("facet weight", c.facet_weight.to_string()),
    ]
}

/// Compare two artifacts' headers and contents.
pub fn diff(a: (&Header, u32, &Contents), b: (&Header, u32, &Contents)) -> Diff {
    let header: Vec<FieldChange> = header_fields(a.0, a.1, a.2)
        .into_iter()
        .zip(header_fields(b.0, b.1, b.2))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((field, x), (_, y))| FieldChange { field, a: x, b: y })
        .collect();
    let left: BTreeMap<&str, &ChunkRecord> = a.2.chunks.iter().map(|c| (c.id.as_str(), c)).collect();
    let right: BTreeMap<&str, &ChunkRecord> = b.2.chunks.iter().map(|c| (c.id.as_str(), c)).collect();
    let label = |h: &Header| format!("{} (build {})", h.artifact_version, h.build_id);
    let mut out = Diff {
        equal: false,
        a: label(a.0),
        b: label(b.0),
        header,
        added: vec![],
        removed: vec![],
        changed: vec![],
        unchanged: 0,
    };
    for (id, c) in &left {
        match right.get(id) {
            None => out.removed.push(ChunkRef { id: id.to_string(), title: c.title.clone() }),
            Some(d) => {
                let (x, y) = (rendered(c), rendered(d));
                if x == y {
                    out.unchanged += 1;
                } else {
                    let diff = similar::TextDiff::from_lines(&x, &y).unified_diff().context_radius(1).to_string();
                    out.changed.push(ChangedChunk { id: id.to_string(), title: d.title.clone(), diff });
                }
            }
        }
    }
    for (id, c) in &right {
        if !left.contains_key(id) {
            out.added.push(ChunkRef { id: id.to_string(), title: c.title.clone() });
        }
    }
    out.equal = out.header.is_empty() && out.added.is_empty() && out.removed.is_empty() && out.changed.is_empty();
    out
}

/// The diff as people read it: header changes, then chunks (`+` added, `-` removed, `~`
/// changed with its line diff), then a count.
pub fn render(d: &Diff) -> String {
    let mut s = format!("a: {}\nb: {}\n", d.a, d.b);
    for f in &d.header {
        let _ = writeln!(s, "{}: {} → {}", f.field, f.a, f.b);
    }
    for c in &d.added {
        let _ = writeln!(s, "+ {}  {}", c.id, c.title);
    }
    for c in &d.removed {
        let _ = writeln!(s, "- {}  {}", c.id, c.title);
    }
    for c in &d.changed {
        let _ = writeln!(s, "~ {}  {}", c.id, c.title);
        for line in c.diff.lines().filter(|l| !l.starts_with("---") && !l.starts_with("+++")) {
            let _ = writeln!(s, "    {line}");
        }
    }
    let _ = writeln!(
        s,
        "{}: {} added, {} removed, {} changed, {} unchanged chunks{}",
        if d.equal { "equal" } else { "different" },
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.unchanged,
        if d.header.is_empty() { String::new() } else { format!(", {} header fields changed", d.header.len()) }
    );
    s
}
