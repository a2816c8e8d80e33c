//! Diagnostics: every problem found in a knowledge base, rendered the way rustc renders its
//! own — `file:line:col`, the source line, a caret, and a hint.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A 1-based position in a source file, or [`Pos::NONE`] for a problem with the file as a
/// whole (it cannot be read, it is not a regular file, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// No position: the diagnostic is about the whole file and renders as `--> file`, with no
    /// snippet. It is also `Pos::default()`, and sorts before every real position.
    pub const NONE: Pos = Pos { line: 0, col: 0 };

    /// Whether this is a real position (lines count from 1).
    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// Source lines longer than this (in characters) are shown as a window of this many characters
/// around the column, cut with `…` at either end, so a megabyte-long line is not echoed back.
pub const MAX_SHOWN_LINE_CHARS: usize = 120;

/// Names and values quoted in messages (`duplicate key `...``) are cut to this many characters,
/// with `…`; see [`excerpt`].
pub const MAX_QUOTED_CHARS: usize = 60;

/// `text` fit for quoting in a message: its first line, cut to [`MAX_QUOTED_CHARS`] characters
/// with `…` when it is longer or has more lines, control characters made visible.
pub fn excerpt(text: &str) -> String {
    let line = text.split(['\n', '\r']).next().unwrap_or("");
    let mut out: String = line.chars().take(MAX_QUOTED_CHARS).map(visible).collect();
    if line.chars().nth(MAX_QUOTED_CHARS).is_some() || line.len() < text.len() {
        out.push('…');
    }
    out
}

/// A control character as its Unicode "control picture" (U+0000 → ␀), so a diagnostic never
/// sends raw control characters (escape sequences, NUL, ...) to the terminal. Tabs stay tabs,
/// so carets keep lining up; every character stays one character, so columns still count.
fn visible(c: char) -> char {
    match c {
        '\t' => c,
        '\0'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
        '\u{7f}' => '\u{2421}',
        '\u{80}'..='\u{9f}' => '\u{fffd}',
        _ => c,
    }
}

/// The part of a source line to show under a diagnostic, and the caret's lead (the spaces, or
/// tabs, before it): the whole line when it is short, else a window of
/// [`MAX_SHOWN_LINE_CHARS`] characters around `col` with `…` where the line was cut.
fn snippet(line: &str, col: usize) -> (String, String) {
    let col0 = col.saturating_sub(1);
    let len = line.chars().count();
    let (start, end) = if len <= MAX_SHOWN_LINE_CHARS {
        (0, len)
    } else {
        let start = col0.min(len).saturating_sub(MAX_SHOWN_LINE_CHARS / 2).min(len - MAX_SHOWN_LINE_CHARS);
        (start, start + MAX_SHOWN_LINE_CHARS)
    };
    let mut shown = String::new();
    let mut lead = String::new();
    if start > 0 {
        shown.push('…');
        lead.push(' ');
    }
    for (i, c) in line.chars().enumerate().skip(start).take(end - start) {
        shown.push(visible(c));
        if i < col0 {
            lead.push(if c == '\t' { '\t' } else { ' ' });
        }
    }
    if end < len {
        shown.push('…');
    }
    (shown, lead)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Label {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable machine-readable name, e.g. `duplicate-key`.
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    /// The primary location and what to say under its caret.
    pub primary: Label,
    /// Other places involved (the first definition of a duplicated key, ...).
    pub secondary: Vec<Label>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code: code.into(),
            message: message.into(),
            primary: Label { file: file.to_string(), pos, message: String::new() },
            secondary: Vec::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, file, pos, message) }
    }

    pub fn label(mut self, message: impl Into<String>) -> Self {
        self.primary.message = message.into();
        self
    }

    pub fn also(mut self, file: &str, pos: Pos, message: impl Into<String>) -> Self {
        self.secondary.push(Label { file: file.to_string(), pos, message: message.into() });
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Looks up source text for rendering; files that cannot be shown render without a snippet.
pub trait SourceLookup {
    fn line(&self, file: &str, line: usize) -> Option<&str>;
}

/// Render diagnostics in rustc's layout. `color` adds ANSI colours for terminals.
pub fn render(diags: &[Diagnostic], sources: &impl SourceLookup, color: bool) -> String {
    let mut out = String::new();
    for d in diags {
        render_one(&mut out, d, sources, color);
        out.push('\n');
    }
    out
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

fn render_one(out: &mut String, d: &Diagnostic, sources: &impl SourceLookup, color: bool) {
    let (word, tint) = match d.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    let _ = writeln!(
        out,
        "{}{} {}",
        paint(color, tint, &format!("{word}[{}]", d.code)),
        paint(color, "1", ":"),
        paint(color, "1", &d.message)
    );
    let mut labels = vec![(&d.primary, true)];
    labels.extend(d.secondary.iter().map(|l| (l, false)));
    let gutter = labels.iter().map(|(l, _)| l.pos.line.to_string().len()).max().unwrap_or(1);
    let pad = " ".repeat(gutter);
    for (i, (label, primary)) in labels.iter().enumerate() {
        let arrow = paint(color, "1;34", if i == 0 { "-->" } else { ":::" });
        if !label.pos.is_known() {
            let _ = writeln!(out, "{pad}{arrow} {}", label.file);
            continue;
        }
        let _ = writeln!(out, "{pad}{arrow} {}:{}:{}", label.file, label.pos.line, label.pos.col);
        if let Some(text) = sources.line(&label.file, label.pos.line) {
            // Columns count characters; tabs keep their width so the caret lines up.
            let (text, lead) = snippet(text.trim_end_matches(['\r', '\n']), label.pos.col);
            let bar = paint(color, "1;34", "|");
            let _ = writeln!(out, "{pad} {bar}");
            let _ = writeln!(out, "{} {bar} {text}", paint(color, "1;34", &format!("{:>gutter$}", label.pos.line)));
            let caret = if *primary { "^" } else { "-" };
            let caret_tint = if *primary { tint } else { "1;34" };
            let _ = writeln!(
                out,
                "{pad} {bar} {lead}{} {}",
                paint(color, caret_tint, caret),
                paint(color, caret_tint, &label.message)
            );
        }
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "{pad} {} {}: {hint}", paint(color, "1;34", "="), paint(color, "1", "help"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str);

    impl SourceLookup for One {
        fn line(&self, _: &str, line: usize) -> Option<&str> {
            self.0.lines().nth(line.checked_sub(1)?)
        }
    }

    #[test]
    fn a_diagnostic_without_a_position_names_the_file_alone() {
        let d = Diagnostic::error("unreadable", "kb/x.yaml", Pos::NONE, "cannot read file").also(
            "kb/x.yaml",
            Pos::default(),
            "here",
        );
        let out = render(&[d], &One("a: b\n"), false);
        assert_eq!(out, "error[unreadable]: cannot read file\n --> kb/x.yaml\n ::: kb/x.yaml\n\n");
    }

    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let line: &'static str = Box::leak(format!("{}X{}", "a".repeat(5000), "b".repeat(5000)).into_boxed_str());
        let out =
            render(&[Diagnostic::error("x", "f", Pos { line: 1, col: 5001 }, "m").label("here")], &One(line), false);
        let lines: Vec<&str> = out.lines().collect();
        let shown = lines[3].strip_prefix("1 | ").expect("source line");
        assert_eq!(shown.chars().count(), MAX_SHOWN_LINE_CHARS + 2, "{shown}");
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        let caret = lines[4].strip_prefix("  | ").expect("caret line");
        let at = caret.find('^').expect("caret");
        assert_eq!(shown.chars().nth(at), Some('X'), "{shown}\n{caret}");
        // Near either end, the window stops at the line's end and the caret still points right.
        for (col, want) in [(1, 'a'), (10_001, 'b')] {
            let out = render(&[Diagnostic::error("x", "f", Pos { line: 1, col }, "m")], &One(line), false);
            let lines: Vec<&str> = out.lines().collect();
            let shown = lines[3].strip_prefix("1 | ").expect("source line");
            let at = lines[4].strip_prefix("  | ").expect("caret line").find('^').expect("caret");
            assert_eq!(shown.chars().nth(at), Some(want), "col {col}: {shown}");
        }
    }

    #[test]
    fn control_characters_are_shown_as_pictures_and_keep_the_caret() {
        let out = render(&[Diagnostic::error("x", "f", Pos { line: 1, col: 5 }, "m")], &One("a: \0\x1b[2J"), false);
        assert!(out.contains("1 | a: ␀␛[2J\n  |     ^"), "{out}");
        assert!(!out.contains('\0') && !out.contains('\x1b'));
    }

    #[test]
    fn quoted_names_are_cut() {
        assert_eq!(excerpt("short"), "short");
        assert_eq!(excerpt("two\nlines"), "two…");
        let long = excerpt(&"k".repeat(1_000_000));
        assert_eq!(long.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
