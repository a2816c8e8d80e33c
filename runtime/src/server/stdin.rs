//! The JSON-lines adapter: one request per input line, one answer per output line, in order,
//! through the same [`Service`] as HTTP.

use std::io::{BufRead, Write};

use crate::api::{ApiError, ErrorCode, QueryRequest};
use crate::service::{RequestIds, Route, Service};

/// Longest request line kept; a longer one is answered with an error and skipped up to its
/// newline, without ever holding more than this much of it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Answer every line of `input` on `output`, flushing after each. A bad line (not UTF-8, not
/// JSON, too long, out of limits) gets an error object and the loop goes on; returns at end
/// of input.
pub fn serve_lines(service: &Service, mut input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    let ids = RequestIds::default();
    let mut line = Vec::with_capacity(1024);
    for n in 1.. {
        let Some(complete) = read_line_bounded(&mut input, &mut line, MAX_LINE_BYTES)? else { break };
        let bad = |message: String| ApiError::new(ErrorCode::BadRequest, format!("line {n}: {message}"));
        let request = if !complete {
            Err(bad(format!("longer than {MAX_LINE_BYTES} bytes; the line was skipped")))
        } else {
            match std::str::from_utf8(&line) {
                Err(e) => Err(bad(format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()))),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => {
                    serde_json::from_str::<QueryRequest>(text).map_err(|e| bad(format!("not a query object: {e}")))
                }
            }
        };
        let id = ids.take_or_make(None);
        let reply = request.and_then(|req| {
            service.answer_blocking(req, Route::default(), &id).map_err(|e| match e.code {
                ErrorCode::BadRequest => ApiError { message: format!("line {n}: {}", e.message), ..e },
                _ => e,
            })
        });
        match reply {
            Ok(answer) => serde_json::to_writer(&mut output, &answer)?,
            Err(e) => serde_json::to_writer(&mut output, &e.body(Some(&id)))?,
        }
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}

/// Read one line into `line` (without its `\n` or `\r\n`), keeping at most `max` bytes and
/// discarding the rest up to the newline. `None` at end of input; `Some(false)` when the line
/// was cut short.
fn read_line_bounded(input: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut seen_any = false;
    let mut overflow = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        seen_any = true;
        let (piece, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if piece.len() > room {
            overflow = true;
        }
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        input.consume(used);
        if done {
            break;
        }
    }
    if !seen_any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(!overflow))
}

#[cfg(test)]
mod tests {
    use super::read_line_bounded;

    #[test]
    fn long_lines_are_cut_and_skipped_to_their_newline() {
        let mut input = std::io::Cursor::new(b"abcdefgh\nxy\r\n\xff\nlast".to_vec());
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut input, &mut line, 4).expect("reads"), Some(false));
        assert_eq!(line, b"abcd");
        assert_eq!(read_line_bounded(&mut input, &mut line, 4).expect("reads"), Some(true));
        assert_eq!(line, b"xy");
        assert_eq!(read_line_bounded(&mut input, &mut line, 4).expect("reads"), Some(true));
        assert_eq!(line, b"\xff");
        assert_eq!(read_line_bounded(&mut input, &mut line, 4).expect("reads"), Some(true));
        assert_eq!(line, b"last");
        assert_eq!(read_line_bounded(&mut input, &mut line, 4).expect("reads"), None);
    }
}
