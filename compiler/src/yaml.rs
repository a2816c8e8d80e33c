//! A YAML (and JSON) reader that keeps the position of every node and never gives up early:
//! it returns the tree it could build plus every diagnostic, like rust-analyzer's parser.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Diagnostic, Pos, excerpt};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written; `plain` is false for quoted and block scalars.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// YAML's null: `~`, `null`, or nothing at all, unquoted.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "scalar",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }
}

fn pos(span: &Span) -> Pos {
    Pos { line: span.start.line(), col: span.start.col() + 1 }
}

/// How deeply lists and mappings may nest in one file. Every walk over a parsed tree (the
/// checks and the chunker, and dropping the tree) recurses once per level, so this bounds their
/// stack use: 128 levels take under 1 MiB even in a debug build (measured: between 512 KiB and
/// 1 MiB), half the 2 MiB stack of the threads files are checked on, while no knowledge base
/// written by hand nests more than a dozen. It is also serde_json's limit for the JSON side.
/// Deeper input, directly or through an alias, is an error and parsing of that file stops.
pub const MAX_DEPTH: usize = 128;

/// How many nodes (scalars, lists, mappings) one file may copy through anchors and aliases.
/// Each alias copies the node its anchor names, so ten levels of ten aliases each ("billion
/// laughs") would copy 10^10 nodes; this stops such a file at its first alias over the limit,
/// while a knowledge base that reuses a few shared blocks (`<<: *defaults` on every entry) copies
/// hundreds or thousands. Keeping an anchored node for later counts too.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// How many bytes of scalar text one file may copy through anchors and aliases (see
/// [`MAX_ALIAS_NODES`]): 8 MiB, a few aliases of even a very long text.
pub const MAX_ALIAS_BYTES: usize = 8 << 20;

/// What a node holds, for the limits above: all its nodes, its scalar bytes, and how many levels
/// of lists and mappings it nests (a scalar 0, `[x]` 1).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    height: usize,
}

impl Size {
    const COLLECTION: Size = Size { nodes: 1, bytes: 0, height: 1 };

    fn scalar(text: &str) -> Size {
        Size { nodes: 1, bytes: text.len(), height: 0 }
    }

    /// Count `more` as copied (heights do not add up for copies).
    fn copy(&mut self, more: Size) {
        self.nodes = self.nodes.saturating_add(more.nodes);
        self.bytes = self.bytes.saturating_add(more.bytes);
    }

    /// Count `child` as a child of this collection.
    fn add(&mut self, child: Size) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height + 1);
    }
}

/// An anchored node, kept for its aliases; `node` is `None` when keeping it would have gone over
/// the copy limits, and any alias to it is then refused.
struct Anchor {
    node: Option<Node>,
    size: Size,
    pos: Pos,
}

enum Frame {
    Seq { items: Vec<Node>, pos: Pos, anchor: usize, size: Size },
    Map { entries: Vec<(Node, Node)>, pending_key: Option<Node>, pos: Pos, anchor: usize, size: Size },
}

/// Parse one file. Returns `None` when a problem leaves nothing usable: a syntax error, a
/// character YAML forbids, nesting deeper than [`MAX_DEPTH`], or aliases copying more than
/// [`MAX_ALIAS_NODES`] nodes or [`MAX_ALIAS_BYTES`] bytes.
pub fn parse(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    if !check_printable(file, text, diags) {
        return None;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Anchor> = HashMap::new();
    // Everything anchors and aliases copied so far in this file.
    let mut copied = Size::default();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let m = e.marker();
                diags.push(
                    Diagnostic::error(
                        "syntax",
                        file,
                        Pos { line: m.line(), col: m.col() + 1 },
                        format!("YAML syntax error: {}", e.info()),
                    )
                    .label("the parser stopped here")
                    .hint("fix the indentation or quoting on this line; nothing from this file was compiled"),
                );
                return None;
            }
        };
        let (node, size) = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents == 2 {
                    diags.push(
                        Diagnostic::error("multiple-documents", file, pos(&span), "a second YAML document in one file")
                            .label("this `---` starts another document")
                            .hint("lore reads one document per file; split it into two files"),
                    );
                }
                continue;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    diags.push(too_deep(file, pos(&span), "this list or mapping is one level too many"));
                    return None;
                }
                let (pos, size) = (pos(&span), Size::COLLECTION);
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Seq { items: Vec::new(), pos, anchor, size },
                    _ => Frame::Map { entries: Vec::new(), pending_key: None, pos, anchor, size },
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, pos, anchor, size }) => {
                    let node = Node { value: Value::Seq(items), pos };
                    remember(&mut anchors, &mut copied, anchor, &node, size);
                    (node, size)
                }
                _ => continue,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { entries, pos, anchor, size, .. }) => {
                    check_duplicate_keys(file, &entries, diags);
                    // Merging only moves entries or drops them, so `size` stays an upper bound.
                    let node = Node { value: Value::Map(resolve_merges(file, entries, diags)), pos };
                    remember(&mut anchors, &mut copied, anchor, &node, size);
                    (node, size)
                }
                _ => continue,
            },
            Event::Scalar(text, style, anchor, _) => {
                // The parser reports a missing value as a zero-width `~`; keep it apart from a
                // written `~` so empty list items can be told from explicit nulls.
                let empty = style == ScalarStyle::Plain && text == "~" && span.start.index() == span.end.index();
                let text = if empty { String::new() } else { text.into_owned() };
                let size = Size::scalar(&text);
                let node = Node { value: Value::Scalar { text, plain: style == ScalarStyle::Plain }, pos: pos(&span) };
                remember(&mut anchors, &mut copied, anchor, &node, size);
                (node, size)
            }
            Event::Alias(id) => {
                match anchors.get(&id) {
                    Some(anchor) => {
                        let at = pos(&span);
                        if stack.len() + anchor.size.height > MAX_DEPTH {
                            diags.push(
                                too_deep(file, at, "this alias copies lists or mappings nested too deep to fit here")
                                    .also(file, anchor.pos, "the anchored node"),
                            );
                            return None;
                        }
                        match &anchor.node {
                            Some(node) if fits(copied, anchor.size) => {
                                copied.copy(anchor.size);
                                (Node { pos: at, ..node.clone() }, anchor.size)
                            }
                            _ => {
                                diags.push(alias_limit(file, text, at, anchor, copied));
                                return None;
                            }
                        }
                    }
                    None => {
                        diags.push(
                            Diagnostic::error("alias", file, pos(&span), "alias to an unknown anchor")
                                .label("defined nowhere above"),
                        );
                        continue;
                    }
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
        };
        match stack.last_mut() {
            Some(Frame::Seq { items, size: parent, .. }) => {
                parent.add(size);
                items.push(node);
            }
            Some(Frame::Map { entries, pending_key, size: parent, .. }) => {
                parent.add(size);
                match pending_key.take() {
                    Some(key) => entries.push((key, node)),
                    None => *pending_key = Some(node),
                }
            }
            None if root.is_none() => root = Some(node),
            None => {}
        }
    }
    root
}

/// Whether copying `more` keeps a file within [`MAX_ALIAS_NODES`] and [`MAX_ALIAS_BYTES`].
fn fits(copied: Size, more: Size) -> bool {
    copied.nodes.saturating_add(more.nodes) <= MAX_ALIAS_NODES
        && copied.bytes.saturating_add(more.bytes) <= MAX_ALIAS_BYTES
}

/// Keep an anchored node for its aliases, if the copy fits the file's limits.
fn remember(anchors: &mut HashMap<usize, Anchor>, copied: &mut Size, anchor: usize, node: &Node, size: Size) {
    if anchor == 0 {
        return;
    }
    let kept = fits(*copied, size).then(|| {
        copied.copy(size);
        node.clone()
    });
    anchors.insert(anchor, Anchor { node: kept, size, pos: node.pos });
}

fn too_deep(file: &str, at: Pos, label: &str) -> Diagnostic {
    Diagnostic::error("too-deep", file, at, format!("lists and mappings nest more than {MAX_DEPTH} levels deep"))
        .label(label)
        .hint(format!(
            "lore reads at most {MAX_DEPTH} levels of nesting, far more than a knowledge base needs; \
             flatten this structure. Nothing from this file was compiled"
        ))
}

fn alias_limit(file: &str, text: &str, at: Pos, anchor: &Anchor, copied: Size) -> Diagnostic {
    let name = alias_name(text, at);
    let (what, limit) = if copied.nodes.saturating_add(anchor.size.nodes) > MAX_ALIAS_NODES {
        (format!("{} nodes", anchor.size.nodes), format!("{MAX_ALIAS_NODES} nodes"))
    } else {
        (format!("{} bytes", anchor.size.bytes), format!("{} MiB", MAX_ALIAS_BYTES >> 20))
    };
    Diagnostic::error("alias-limit", file, at, format!("aliases in this file copy more than {limit}"))
        .label(format!("`*{name}` would copy {what} more"))
        .also(file, anchor.pos, format!("`&{name}` anchors this node"))
        .hint(format!(
            "every alias copies the node its anchor names, so aliases of aliases grow exponentially \
             (\"billion laughs\"); lore copies at most {MAX_ALIAS_NODES} nodes or {} MiB per file. \
             Nothing from this file was compiled",
            MAX_ALIAS_BYTES >> 20
        ))
}

/// The name of the alias at `at` (`*name`), read back from the source for the message.
fn alias_name(text: &str, at: Pos) -> String {
    let line = text.lines().nth(at.line.saturating_sub(1)).unwrap_or("");
    let name: String = line
        .chars()
        .skip(at.col)
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
        .collect();
    excerpt(&name)
}

/// YAML 1.1's merge key: a plain `<<`.
fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar { text, plain: true } if text == "<<")
}

/// Resolve merge keys the way YAML 1.1 loaders (PyYAML, serde_yaml) do: `<<: *base` adds the
/// entries of the mapping `base` whose keys the mapping does not have itself, `<<: [*a, *b]`
/// those of several mappings, the first one winning. Merged entries take the place of the `<<`
/// entry. Anchored mappings had their own merges resolved when they were read.
fn resolve_merges(file: &str, entries: Vec<(Node, Node)>, diags: &mut Vec<Diagnostic>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let key_text = |k: &Node| match &k.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        _ => None,
    };
    // Explicit keys win, wherever they are written.
    let mut present: HashSet<String> =
        entries.iter().filter(|(k, _)| !is_merge_key(k)).filter_map(|(k, _)| key_text(k)).collect();
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if !is_merge_key(&key) {
            out.push((key, value));
            continue;
        }
        let at = value.pos;
        let sources = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => match items.iter().find(|i| !matches!(i.value, Value::Map(_))) {
                None => items,
                Some(bad) => {
                    diags.push(invalid_merge(file, at, &format!("a list holding a {}", bad.kind())));
                    continue;
                }
            },
            _ => {
                diags.push(invalid_merge(file, at, &format!("a {}", value.kind())));
                continue;
            }
        };
        for source in sources {
            let Value::Map(merged) = source.value else { continue };
            for (k, v) in merged {
                if key_text(&k).is_none_or(|t| present.insert(t)) {
                    out.push((k, v));
                }
            }
        }
    }
    out
}

fn invalid_merge(file: &str, at: Pos, what: &str) -> Diagnostic {
    Diagnostic::error("invalid-merge", file, at, format!("`<<` merges mappings, not {what}"))
        .label("expected a mapping, or a list of mappings")
        .hint(
            "`<<: *base` copies the entries of the mapping anchored `&base` that this mapping does not \
             set itself; `<<: [*a, *b]` merges several, the first one winning. Quote the key (`\"<<\"`) \
             for a literal `<<`",
        )
}

/// Whether a character may appear in a YAML stream: YAML 1.2's `c-printable` (tab, line breaks,
/// and printable Unicode; NEL is allowed, other C0 and C1 controls, DEL, U+FFFE and U+FFFF are
/// not).
fn is_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// Report the first character YAML forbids; `false` when there is one. NUL and every other
/// non-printable character are errors, not warnings: YAML 1.2 makes a stream containing them
/// ill-formed, other YAML tools (PyYAML, libyaml) refuse the file, and saphyr takes a NUL for the
/// end of input and would silently drop the rest of the file. (Escaped in a double-quoted string,
/// `"\x07"`, they are fine.)
fn check_printable(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> bool {
    let Some(at) = text.find(|c| !is_printable(c)) else { return true };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    let c = text[at..].chars().next().unwrap_or('\0');
    let more = text[at..].chars().filter(|&c| !is_printable(c)).count() - 1;
    let more = match more {
        0 => String::new(),
        1 => " (and 1 more forbidden character in this file)".to_string(),
        n => format!(" (and {n} more forbidden characters in this file)"),
    };
    let code = format!("U+{:04X}", c as u32);
    let d = if c == '\0' {
        Diagnostic::error("forbidden-character", file, Pos { line, col }, format!("NUL byte in YAML{more}"))
            .label(format!("{code} is not allowed in YAML"))
            .hint(
                "YAML forbids NUL; a file with NUL bytes is usually UTF-16 or binary: save it as UTF-8 text. \
                 Nothing from this file was compiled",
            )
    } else {
        Diagnostic::error(
            "forbidden-character",
            file,
            Pos { line, col },
            format!("control character {code} in YAML{more}"),
        )
        .label("not a printable character")
        .hint(format!(
            "YAML allows only printable characters, tabs and line breaks; delete it, or write it as an escape \
             in a double-quoted string (\"\\u{:04X}\"). Nothing from this file was compiled",
            c as u32
        ))
    };
    diags.push(d);
    false
}

fn check_duplicate_keys(file: &str, entries: &[(Node, Node)], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    for (key, _) in entries {
        // Merge keys are not keys of the mapping: each one merges (`resolve_merges`).
        let Some(name) = key.as_str().filter(|_| !is_merge_key(key)) else { continue };
        match seen.get(name) {
            Some(first) => diags.push(
                Diagnostic::error(
                    "duplicate-key",
                    file,
                    key.pos,
                    format!("duplicate key `{}` in one mapping", excerpt(name)),
                )
                .label("defined again here")
                .also(file, first.pos, "first defined here")
                .hint(
                    "a YAML loader keeps only one of these values and silently drops the other; \
                     if this starts a new list entry, add the missing `- ` in front of it",
                ),
            ),
            None => {
                seen.insert(name, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let mut d = Vec::new();
        let root = parse("f.yaml", "a:\n  b: 1\n  c: [x, y]\n", &mut d).expect("parses");
        assert!(d.is_empty());
        let b = root.get("a").and_then(|a| a.get("b")).expect("a.b");
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        let c = root.get("a").and_then(|a| a.get("c")).expect("a.c");
        assert_eq!(c.kind(), "list");
    }

    #[test]
    fn json_is_read_too() {
        let mut d = Vec::new();
        let root =
            parse("r.json", "{\"work\": [{\"name\": \"X\", \"url\": \"http:\\/\\/x\"}]}", &mut d).expect("parses");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(root.get("work").expect("work").kind(), "list");
    }

    #[test]
    fn duplicate_keys_name_both_places() {
        let mut d = Vec::new();
        parse("f.yaml", "- id: a\n  title: x\n  id: b\n", &mut d);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].primary.pos, Pos { line: 3, col: 3 });
        assert_eq!(d[0].secondary[0].pos, Pos { line: 1, col: 3 });
    }

    fn parse_ok(text: &str) -> Node {
        let mut d = Vec::new();
        let root = parse("f.yaml", text, &mut d).expect("parses");
        assert!(d.is_empty(), "{d:?}");
        root
    }

    fn parse_err(text: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        assert!(parse("f.yaml", text, &mut d).is_none(), "parsed");
        d
    }

    /// `depth` nested block lists (`- - - v`) or mappings (`a:\n a:\n  a: v`).
    fn nested(depth: usize, maps: bool) -> String {
        if maps {
            (0..depth).map(|i| format!("{}a:{}", " ".repeat(i), if i + 1 == depth { " v" } else { "\n" })).collect()
        } else {
            format!("{}v\n", "- ".repeat(depth))
        }
    }

    fn height(node: &Node) -> usize {
        match &node.value {
            Value::Scalar { .. } => 0,
            Value::Seq(items) => 1 + items.iter().map(height).max().unwrap_or(0),
            Value::Map(entries) => 1 + entries.iter().map(|(_, v)| height(v)).max().unwrap_or(0),
        }
    }

    #[test]
    fn nesting_up_to_max_depth_parses_and_chunks_on_a_small_stack() {
        for maps in [false, true] {
            let text = nested(MAX_DEPTH, maps);
            // Unit tests run on 2 MiB threads, like the threads lorec checks files on: every walk
            // over the tree (validation, chunking, rendering, dropping) must fit in it.
            let chunks = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let root = parse_ok(&text);
                    assert_eq!(height(&root), MAX_DEPTH);
                    let mut d = Vec::new();
                    let chunks = crate::chunk::chunk_file("f.yaml", &root, &mut d);
                    assert!(d.is_empty(), "{d:?}");
                    chunks.len()
                })
                .expect("thread")
                .join()
                .expect("no stack overflow");
            assert_eq!(chunks, 1);
        }
    }

    #[test]
    fn deeper_nesting_is_an_error_at_the_first_level_too_many() {
        for maps in [false, true] {
            for depth in [MAX_DEPTH + 1, 10_000] {
                let d = parse_err(&nested(depth, maps));
                assert_eq!(d.len(), 1, "{d:?}");
                assert_eq!(d[0].code, "too-deep");
                let want = if maps {
                    Pos { line: MAX_DEPTH + 1, col: MAX_DEPTH + 1 }
                } else {
                    Pos { line: 1, col: 2 * MAX_DEPTH + 1 }
                };
                assert_eq!(d[0].primary.pos, want, "maps: {maps}");
            }
        }
    }

    #[test]
    fn aliases_cannot_nest_deeper_than_max_depth() {
        // Each line nests one more level through an alias, without ever opening more than two.
        let mut text = String::from("a0: &a0 [x]\n");
        for i in 1..=MAX_DEPTH {
            text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let d = parse_err(&text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "too-deep");
        assert_eq!(d[0].primary.pos.line, MAX_DEPTH);
        assert_eq!(d[0].secondary[0].pos.line, MAX_DEPTH - 1);
    }

    #[test]
    fn billion_laughs_stops_at_the_first_alias_over_the_limit() {
        let mut text = String::from("a0: &a0 x\n");
        for i in 1..10 {
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
        }
        let d = parse_err(&text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "alias-limit");
        assert_eq!(d[0].primary.file, "f.yaml");
        // a5's aliases each copy a4 (11,111 nodes); the ninth goes over 100,000 with what the
        // anchors kept.
        assert_eq!(d[0].primary.pos.line, 6);
        assert!(d[0].primary.message.contains("`*a4`"), "{:?}", d[0].primary);
        assert_eq!(d[0].secondary[0].pos, Pos { line: 5, col: 9 });
        assert!(d[0].secondary[0].message.contains("`&a4`"));
    }

    #[test]
    fn large_text_copied_by_aliases_is_bounded_too() {
        let big = "x".repeat(MAX_ALIAS_BYTES / 4 + 1);
        let d = parse_err(&format!("a: &a {big}\nb: [*a, *a, *a, *a]\n"));
        assert_eq!(d[0].code, "alias-limit");
        assert!(d[0].message.contains("8 MiB"), "{}", d[0].message);
        assert_eq!(d[0].primary.pos, Pos { line: 2, col: 13 });
    }

    #[test]
    fn reasonable_reuse_is_fine() {
        let mut text = String::from("defaults: &d {visibility: internal, tags: [a, b, c], city: Paris}\njobs:\n");
        for i in 0..2000 {
            text.push_str(&format!("  - <<: *d\n    id: j{i}\n"));
        }
        let root = parse_ok(&text);
        let Some(Value::Seq(jobs)) = root.get("jobs").map(|j| &j.value) else { panic!("jobs") };
        assert_eq!(jobs.len(), 2000);
        assert_eq!(jobs[1999].get("city").and_then(Node::as_str), Some("Paris"));
    }

    #[test]
    fn merge_keys_merge_missing_keys_explicit_and_first_win() {
        let root = parse_ok(
            "a: &a {x: 1, y: 1, z: 1}\n\
             b: &b {y: 2, w: 2}\n\
             c:\n  <<: [*a, *b]\n  x: 3\n\
             d:\n  x: 4\n  <<: *b\n  y: 4\n\
             e: &e\n  <<: *a\n  v: 5\n\
             f: {<<: *e, \"<<\": literal}\n",
        );
        let keys = |n: &Node| match &n.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_str().unwrap_or("?"), v.as_str().unwrap_or("?")))
                .collect::<Vec<_>>(),
            _ => panic!("not a map"),
        };
        let get = |k: &str| root.get(k).expect(k);
        assert_eq!(keys(get("c")), ["y=1", "z=1", "w=2", "x=3"]);
        assert_eq!(keys(get("d")), ["x=4", "w=2", "y=4"]);
        assert_eq!(keys(get("e")), ["x=1", "y=1", "z=1", "v=5"]);
        // Merges nest; a quoted `<<` is an ordinary key.
        assert_eq!(keys(get("f")), ["x=1", "y=1", "z=1", "v=5", "<<=literal"]);
        // Merged entries keep the position they were written at.
        assert_eq!(get("c").get("w").expect("w").pos, Pos { line: 2, col: 17 });
    }

    #[test]
    fn merging_something_else_than_mappings_is_an_error() {
        let mut d = Vec::new();
        let root = parse("f.yaml", "s: &s [1]\na:\n  <<: 3\n  k: v\nb:\n  <<: [*s]\n", &mut d).expect("parses");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.code == "invalid-merge"));
        assert_eq!(d[0].primary.pos, Pos { line: 3, col: 7 });
        assert_eq!(d[1].primary.pos, Pos { line: 6, col: 7 });
        assert!(d[1].message.ends_with("not a list holding a list"), "{}", d[1].message);
        // The bad `<<` is left out rather than shown as a literal key.
        assert!(root.get("a").and_then(|a| a.get("<<")).is_none());
    }

    #[test]
    fn keys_from_a_merge_are_not_duplicates_but_written_twice_are() {
        let mut d = Vec::new();
        parse("f.yaml", "base: &b {id: x, title: t}\njob:\n  <<: *b\n  id: y\n  title: u\n", &mut d).expect("parses");
        assert!(d.is_empty(), "{d:?}");
        parse("f.yaml", "base: &b {id: x}\njob:\n  <<: *b\n  id: y\n  id: z\n", &mut d).expect("parses");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "duplicate-key");
    }

    #[test]
    fn nul_and_control_characters_are_errors_at_their_position() {
        let d = parse_err("a: b\nc: dé\0f\0\n");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, "forbidden-character");
        assert_eq!(d[0].primary.pos, Pos { line: 2, col: 6 });
        assert!(d[0].message.starts_with("NUL byte in YAML (and 1 more"), "{}", d[0].message);
        let d = parse_err("a: b\u{7}\n");
        assert_eq!(d[0].primary.pos, Pos { line: 1, col: 5 });
        assert!(d[0].message.contains("U+0007"), "{}", d[0].message);
        for bad in ["\u{1b}[2J", "\u{7f}", "\u{9b}", "\u{ffff}", "\u{c}"] {
            parse_err(&format!("a: {bad}\n"));
        }
        // Tabs, CR LF, NEL and escapes are fine.
        parse_ok("a: b\tc\r\nc: \"\\0 \\x07\"\nd: e\u{85}f\n");
    }
}
