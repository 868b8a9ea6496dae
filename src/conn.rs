//! A connected client as the rest of the node sees it (the API, the writer's timers, the
//! reactions to committed events), and the registry of connections by user. Below `node`,
//! which holds the registry; the session layer fills it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::outbound::Outbound;
use crate::protocol::{ClientInfo, Encoding, Raw};

/// One subscription of a connection.
#[derive(Debug, Clone)]
pub struct SubState {
    /// `chan_info` from the subscription token.
    pub chan_info: Option<Raw>,
    /// Presence is kept for this channel.
    pub presence: bool,
    /// The namespace announces joins and leaves.
    pub join_leave: bool,
    /// When the subscription must be refreshed (unix seconds; 0 = never).
    pub expires_at: u64,
}

/// Mutable identity and subscriptions of a connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// User id ("" = anonymous).
    pub user: String,
    /// Client id (UUID) given at connect.
    pub client: String,
    /// `info` of the connection token.
    pub conn_info: Option<Raw>,
    /// `meta` of the token or the connect hook: for proxy calls only, never for clients.
    pub meta: Option<Raw>,
    /// Channel → subscription.
    pub subs: HashMap<String, SubState>,
}

impl ConnState {
    /// ClientInfo for `channel` (with its `chan_info` when subscribed).
    pub fn client_info(&self, channel: &str) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.client.clone(),
            conn_info: self.conn_info.clone(),
            chan_info: self.subs.get(channel).and_then(|s| s.chan_info.clone()),
        }
    }

    /// Earliest subscription expiry (unix seconds; 0 = none).
    pub fn next_sub_expiry(&self) -> u64 {
        self.subs
            .values()
            .map(|s| s.expires_at)
            .filter(|t| *t > 0)
            .min()
            .unwrap_or(0)
    }
}

/// A connection, shared by its reader (session), its writer and the API.
#[derive(Debug)]
pub struct Conn {
    /// Node-local connection number.
    pub id: u64,
    /// Outbound queue.
    pub out: Arc<Outbound>,
    /// Identity and subscriptions.
    pub state: Mutex<ConnState>,
    /// `connect` succeeded.
    pub connected: AtomicBool,
    /// Connection expiry (unix seconds; 0 = never).
    pub expires_at: AtomicU64,
    /// Earliest subscription expiry (unix seconds; 0 = none).
    pub sub_expires_at: AtomicU64,
    /// Pongs received (the writer compares it across a ping).
    pub pongs: AtomicU64,
    /// Headers of the client's HTTP request that some proxy forwards (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The emulation session id of a bidirectional-emulation connection (HTTP streaming or
    /// SSE; told to the client in the connect result), "" for others.
    pub session: String,
}

impl Conn {
    /// A fresh, not yet connected connection.
    pub fn new(id: u64, queue_bytes: usize) -> Conn {
        Conn {
            id,
            out: Arc::new(Outbound::new(queue_bytes)),
            state: Mutex::new(ConnState::default()),
            connected: AtomicBool::new(false),
            expires_at: AtomicU64::new(0),
            sub_expires_at: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            headers: Vec::new(),
            session: String::new(),
        }
    }

    /// The same connection, keeping these request headers for the proxies.
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Conn {
        self.headers = headers;
        self
    }

    /// The same connection, as the emulation session `id`.
    pub fn with_session(mut self, id: String) -> Conn {
        self.session = id;
        self
    }

    /// Recomputes the earliest subscription expiry after subscriptions changed.
    pub fn refresh_sub_expiry(&self, st: &ConnState) {
        self.sub_expires_at
            .store(st.next_sub_expiry(), Ordering::Relaxed);
    }
}

/// An emulation session's encoding and the queue of its client messages.
pub type EmulationSession = (Encoding, tokio::sync::mpsc::Sender<bytes::Bytes>);

/// Connected clients by user, for the API's per-user operations and the node's counts.
#[derive(Default)]
pub struct Registry {
    users: RwLock<HashMap<String, HashMap<u64, Arc<Conn>>>>,
    clients: AtomicUsize,
    /// Emulation session id → the encoding of that session's connection on this node and the
    /// queue of its client messages (`/emulation` requests).
    sessions: Mutex<HashMap<String, EmulationSession>>,
}

impl Registry {
    /// Records a connection that completed `connect`.
    pub fn add(&self, user: &str, conn: Arc<Conn>) {
        let mut users = self.users.write();
        if users
            .entry(user.to_string())
            .or_default()
            .insert(conn.id, conn)
            .is_none()
        {
            self.clients.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets a connection.
    pub fn remove(&self, user: &str, conn_id: u64) {
        let mut users = self.users.write();
        if let Some(m) = users.get_mut(user)
            && m.remove(&conn_id).is_some()
        {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            if m.is_empty() {
                users.remove(user);
            }
        }
    }

    /// The connections of `user`.
    pub fn of_user(&self, user: &str) -> Vec<Arc<Conn>> {
        self.users
            .read()
            .get(user)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every connected client.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.users
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Connected clients.
    pub fn num_clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Records the emulation session `id`, whose client messages (in `enc`) go to `tx`.
    pub fn add_session(
        &self,
        id: &str,
        enc: Encoding,
        tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    ) {
        self.sessions.lock().insert(id.to_string(), (enc, tx));
    }

    /// Forgets the emulation session `id`.
    pub fn remove_session(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    /// The encoding of emulation session `id` and where its client messages go, if it is on
    /// this node.
    pub fn session(&self, id: &str) -> Option<EmulationSession> {
        self.sessions.lock().get(id).cloned()
    }

    /// Distinct users connected.
    pub fn num_users(&self) -> usize {
        self.users.read().len()
    }
}
