//! The lore artifact: on-disk schema, sealing, and the algorithms (tokenisation, embedding,
//! text analysis) that the compiler and the runtime must agree on byte for byte.
//!
//! This crate is the API boundary between `lorec` and `lore`: it knows nothing about YAML and
//! nothing about HTTP. `docs/format.md` specifies what [`container`] reads and writes.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod compress;
pub mod container;
pub mod embed;
pub mod fsio;
#[cfg(feature = "logging")]
pub mod logging;
pub mod profiles;
pub mod rekey;
pub mod schema;
pub mod seal;
pub mod text;
pub mod tokenizer_json;
pub mod verify;
pub mod wordpiece;

pub use container::{Container, ContainerError, OpenedContainer, SectionData, SectionPlan, write_container};
pub use schema::*;

/// Eight bytes that open every artifact. Non-ASCII first byte and CR LF + SUB catch text-mode
/// transfers and `cat`-ing into a terminal, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89LORE\r\n\x1a";

/// The version this build writes. Every change to the bytes on disk bumps it and adds a golden
/// artifact under `tests/compat/`.
pub const FORMAT_VERSION: u32 = 6;

/// The oldest reader that understands what this build writes: version 5 added facet vectors
/// to the index, which a version 4 reader would misread. Version 6 only added the optional
/// persona section, so an artifact without one is still readable by version 5.
pub const MIN_READER_VERSION: u32 = 5;

/// The oldest reader of an artifact with a persona section (format v6).
pub const PERSONA_MIN_READER_VERSION: u32 = 6;

/// Format v3 stores the model section in units of this many bytes (digest purposes only: the
/// section stays plain and is mapped in place), so `lore` hashes it on all cores at start-up.
pub const MODEL_STRIPE_BYTES: usize = 1 << 20;

/// The oldest format version this build can still read.
pub const OLDEST_SUPPORTED: u32 = 1;
