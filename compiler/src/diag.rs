//! Diagnostics: every problem found in a knowledge base, rendered the way rustc renders its
//! own — `file:line:col`, the source line, a caret, and a hint.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A 1-based position in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
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
        let arrow = if i == 0 { "-->" } else { ":::" };
        let _ =
            writeln!(out, "{pad}{} {}:{}:{}", paint(color, "1;34", arrow), label.file, label.pos.line, label.pos.col);
        if let Some(text) = sources.line(&label.file, label.pos.line) {
            let text = text.trim_end_matches(['\r', '\n']);
            let bar = paint(color, "1;34", "|");
            let _ = writeln!(out, "{pad} {bar}");
            let _ = writeln!(out, "{} {bar} {text}", paint(color, "1;34", &format!("{:>gutter$}", label.pos.line)));
            // Columns count characters; tabs keep their width so the caret lines up.
            let lead: String = text
                .chars()
                .take(label.pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
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
