//! HelloPears core: the pure heart of a peer-to-peer, local-first todo app.
//!
//! - [`keys`] and [`topic`]: writer identities (ed25519) and topic ids (SHA-256).
//! - [`log`]: signed, hash-chained entries of one writer's append-only log.
//! - [`base`]: the causal DAG of every writer's log, linearized deterministically and
//!   applied to a view with rollback (the seed's Autobase).
//! - [`db`]: the document DB view with queries, indexes and change notifications
//!   (the seed's hyperbeedeebee); [`todo`]: the typed todo API over it.
//! - [`sync`]: the replication protocol as a sans-IO state machine per connection.
//! - [`limits`]: every limit against hostile peers and load, in one place.
//! - [`storage`]: the persistence trait and its in-memory backend.
//! - [`replica`]: one topic's replica: the base over the view, and its local writer.
//! - [`node`]: the replication engine every driver runs: one replica, many remotes, persist
//!   before announce. [`ui`]: what every UI shows and the one command vocabulary.
//!
//! This crate does no IO, spawns nothing, and reads no clock or randomness it is not
//! handed; it builds for native targets and `wasm32-unknown-unknown` alike.
#![deny(missing_docs)]

pub mod access;
pub mod app;
pub mod app_fetch;
pub mod base;
pub mod control;
pub mod db;
pub mod keys;
pub mod limits;
pub mod list;
pub mod log;
pub mod node;
pub mod replica;
pub mod storage;
pub mod sync;
pub mod todo;
pub mod topic;
pub mod ui;

#[cfg(feature = "test-utils")]
pub mod fuzzing;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "test-utils")]
pub mod testing;
#[cfg(feature = "test-utils")]
pub mod workload;

pub use base::{Apply, Base};
pub use db::Db;
pub use keys::{Hash, Keypair, WriterId};
pub use log::Entry;
pub use node::Node;
pub use replica::Replica;
pub use sync::{Message, Session, SessionConfig};
pub use todo::Todo;
pub use topic::Topic;
