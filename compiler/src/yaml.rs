//! A YAML (and JSON) reader that keeps the position of every node and never gives up early:
//! it returns the tree it could build plus every diagnostic, like rust-analyzer's parser.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::{Diagnostic, Pos};

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

enum Frame {
    Seq { items: Vec<Node>, pos: Pos, anchor: usize },
    Map { entries: Vec<(Node, Node)>, pending_key: Option<Node>, pos: Pos, anchor: usize },
}

/// Parse one file. Returns `None` only when a syntax error leaves nothing usable.
pub fn parse(file: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
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
        let node = match event {
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
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq { items: Vec::new(), pos: pos(&span), anchor });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map { entries: Vec::new(), pending_key: None, pos: pos(&span), anchor });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, pos, anchor }) => {
                    remember(&mut anchors, anchor, Node { value: Value::Seq(items), pos })
                }
                _ => continue,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { entries, pos, anchor, .. }) => {
                    check_duplicate_keys(file, &entries, diags);
                    remember(&mut anchors, anchor, Node { value: Value::Map(entries), pos })
                }
                _ => continue,
            },
            Event::Scalar(text, style, anchor, _) => {
                // The parser reports a missing value as a zero-width `~`; keep it apart from a
                // written `~` so empty list items can be told from explicit nulls.
                let empty = style == ScalarStyle::Plain && text == "~" && span.start.index() == span.end.index();
                let text = if empty { String::new() } else { text.into_owned() };
                remember(
                    &mut anchors,
                    anchor,
                    Node { value: Value::Scalar { text, plain: style == ScalarStyle::Plain }, pos: pos(&span) },
                )
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => Node { pos: pos(&span), ..node.clone() },
                None => {
                    diags.push(
                        Diagnostic::error("alias", file, pos(&span), "alias to an unknown anchor")
                            .label("defined nowhere above"),
                    );
                    continue;
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
        };
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, pending_key, .. }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => *pending_key = Some(node),
            },
            None if root.is_none() => root = Some(node),
            None => {}
        }
    }
    root
}

fn remember(anchors: &mut HashMap<usize, Node>, anchor: usize, node: Node) -> Node {
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    node
}

fn check_duplicate_keys(file: &str, entries: &[(Node, Node)], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Node> = HashMap::new();
    for (key, _) in entries {
        let Some(name) = key.as_str() else { continue };
        match seen.get(name) {
            Some(first) => diags.push(
                Diagnostic::error("duplicate-key", file, key.pos, format!("duplicate key `{name}` in one mapping"))
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
}
