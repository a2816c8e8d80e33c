//! The stderr logging `lorec` and `lore` share: filtered by `LORE_LOG` (`info` by default;
//! `warn`, `debug`, or per target such as `warn,runtime=debug`) with tracing-subscriber's
//! `Targets`, which needs no regex engine (EnvFilter's cost the container image 0.4 MB), and
//! written as text (coloured on a terminal) or as JSON lines.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Install the process's logger; `json` for one JSON object per line.
pub fn init(json: bool) {
    let default = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    let filter = match std::env::var("LORE_LOG") {
        Ok(text) => text.parse().unwrap_or_else(|e| {
            eprintln!("LORE_LOG={text:?} is not a log filter ({e}); logging at info");
            default()
        }),
        Err(_) => default(),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(layer.json()).init();
    } else {
        use std::io::IsTerminal as _;
        registry.with(layer.with_ansi(std::io::stderr().is_terminal())).init();
    }
}
