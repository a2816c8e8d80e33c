//! The JSON-lines loop: one request per input line, one answer per output line, in order.

use std::io::{BufRead, Write};

use serde_json::json;

use crate::{Engine, QueryRequest};

/// Answer every line of `input` on `output`, flushing after each. Bad lines get an error
/// object and the loop goes on; returns at end of input.
pub fn serve_lines(engine: &Engine, input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<QueryRequest>(&line) {
            Err(e) => {
                json!({"error": {"code": "bad_request", "message": format!("line {}: not a query object: {e}", n + 1)}})
            }
            Ok(req) => match req.options() {
                Err(e) => json!({"error": {"code": "bad_request", "message": format!("line {}: {e}", n + 1)}}),
                Ok(opts) => match engine.query_with(&req.q, opts) {
                    Ok(answer) => serde_json::to_value(answer)
                        .unwrap_or_else(|e| json!({"error": {"code": "internal", "message": e.to_string()}})),
                    Err(e) => json!({"error": {"code": "internal", "message": e.to_string()}}),
                },
            },
        };
        serde_json::to_writer(&mut output, &reply)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}
