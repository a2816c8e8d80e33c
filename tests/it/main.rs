//! End-to-end tests: every test here drives the real `lorec` and `lore` binaries.
//!
//! Run through `cargo xtask test`, which fetches the model and builds the binaries first.

mod artifact;
mod browser;
mod chat;
mod collections;
mod container;
mod deploy;
mod diagnostics;
mod diff;
mod golden;
mod hostile;
mod hostile_yaml;
mod manifest;
mod minilm;
mod models;
mod oci;
mod openai;
mod openai_client;
mod publish;
mod rekey;
mod replicas;
mod reproducible;
mod retrieval;
mod serve;
mod service;
mod slow_clients;
mod support;
