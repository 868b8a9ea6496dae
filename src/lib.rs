//! Switchyard: a real-time messaging backplane in one binary.
//!
//! Module map, top layer first (imports only point down; see ARCHITECTURE.md and
//! `tests/layers.rs`):
//! - [`server`] — assembles the layers; start and the shutdown order.
//! - [`transport`] — listeners, HTTP routing, WebSocket reader/writer tasks.
//! - [`api`] — the server HTTP API; [`admin`] — the status page, its JSON, `/metrics`.
//! - [`session`] — one client: connect/auth, command dispatch, subscriptions; reactions to
//!   committed events (the engine's hook).
//! - [`ops`] — publish/history/presence shared by `session` and `api`; [`survey`] — cluster-wide
//!   figures (every node's `info`, the union of channels), asked of every member at once.
//! - [`node`] — the context handlers share.
//! - [`cluster`] — openraft: writes and forwarding, Raft RPC, membership, liveness, status.
//! - [`store`] — openraft storage on sled and the Raft type config.
//! - [`engine`] — state machine + hub under one lock: apply and deliver in log order.
//! - [`replicator`] — the write path's seam: batching proposals into log entries through
//!   the [`replicator::Commit`] trait.
//! - [`auth`], [`channels`], [`limits`], [`hub`] (local fan-out), [`conn`] (connections and
//!   their registry), [`peer`] (HTTP client to other nodes), [`proxy`] (client events sent
//!   to the application's backend: Centrifugo's proxy hooks).
//! - [`metrics`] (every metric name), [`state`] (the deterministic state machine),
//!   [`outbound`] (a connection's bounded queue), [`tls`].
//! - [`protocol`] (client protocol v2 types, codec, codes; pure), [`config`], [`sys`].

pub mod admin;
pub mod api;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod engine;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod outbound;
pub mod peer;
pub mod protocol;
pub mod proxy;
pub mod replicator;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod survey;
pub mod sys;
pub mod tls;
pub mod transport;

pub use config::Config;
pub use server::Server;
