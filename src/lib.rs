//! Switchyard: a real-time messaging backplane in one binary.
//!
//! Module map (see ARCHITECTURE.md for the invariants):
//! - [`config`] — the one validated configuration type (defaults < file < env < flags).
//! - [`transport`] — listeners, HTTP routing, WebSocket reader/writer tasks.
//! - [`protocol`] — client protocol v2 types, JSON codec, error/disconnect code table (pure).
//! - [`session`] — one client: connect/auth, command dispatch, subscriptions.
//! - [`api`] — the server HTTP API.
//! - [`admin`] — the status page (HTML compiled in) and its JSON endpoints.
//! - [`ops`] — publish/history/presence shared by `session` and `api`.
//! - [`log`] — the write path's seam: batching proposals into log entries.
//! - [`engine`] — state machine + hub under one lock: apply and deliver in log order.
//! - [`state`] — the deterministic state machine (streams, history, presence).
//! - [`hub`] — local channel → subscriber index and fan-out.
//! - [`outbound`] — a connection's bounded outbound queue.
//! - [`sys`] — running under systemd: sd_notify readiness/watchdog/stopping messages.
//! - [`metrics`] — every metric name, registered at zero; Prometheus rendering.
//! - [`auth`], [`channels`], [`node`], [`server`].

pub mod admin;
pub mod api;
pub mod auth;
pub mod channels;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod hub;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod outbound;
pub mod protocol;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod sys;
pub mod tls;
pub mod transport;

pub use config::Config;
pub use server::Server;
