//! The lore runtime: open artifacts in milliseconds and answer questions from them.
//!
//! Layers, each using only those below it:
//! - [`engine`]: one opened artifact; synchronous, no async runtime.
//! - [`registry`]: knowledge bases and their weighted variants, each an engine behind an
//!   atomic pointer; loading, swapping, rollback.
//! - [`service`]: the one entry point of every transport: validate, choose the engine, run,
//!   record metrics, map errors ([`api`] holds the wire types and that one mapping).
//! - [`chat`]: the answer layer on top of retrieval (persona, LLM or extractive answers,
//!   citations, conversation memory); the service calls it like an engine.
//! - [`server`]: thin adapters (HTTP, stdin, admin, metrics) and the process lifecycle.
//!
//! [`config`] reads what to serve; [`metrics`] is the Prometheus registry. This crate never
//! depends on YAML, on the compiler, or on anything only the compiler needs; its only view of
//! a knowledge base is the artifact.
#![deny(unsafe_code)]

pub mod api;
pub mod chat;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod service;

pub use api::{DEFAULT_K, MAX_K, MAX_QUESTION_BYTES, QueryRequest};
pub use engine::mapped::LoadMode;
pub use engine::{Answer, Engine, EngineError, Hit, QueryOptions};
