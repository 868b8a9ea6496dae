//! Subscribing and unsubscribing a connection, shared by client commands, connect-time
//! (token `channels`) subscriptions and the server API.
//!
//! The reply (or push) that tells the client its position is queued while the engine's read
//! lock is held, together with the hub registration: publications applied before are in the
//! position or the recovered list, publications applied after are queued behind the reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::ChannelOptions;
use crate::engine::Engine;
use crate::hub::Subscriber;
use crate::node::Node;
use crate::protocol::json::encode_push;
use crate::protocol::types::UnsubscribePush;
use crate::protocol::{ErrorCode, Publication, Raw, SubscribeResult, codes};
use crate::state::{Op, Recovery, StateMachine};

use crate::conn::{Conn, ConnState, SubState};

/// What the client asked of a subscription's stream.
#[derive(Debug, Default, Clone)]
pub struct StreamRequest {
    /// Recover from `offset`/`epoch`.
    pub recover: bool,
    /// Last seen offset.
    pub offset: u64,
    /// Last seen epoch.
    pub epoch: String,
    /// Wants a position.
    pub positioned: bool,
    /// Wants recovery later.
    pub recoverable: bool,
    /// Wants join/leave pushes.
    pub join_leave: bool,
    /// Subscribe flag bit 2 (the SDKs' `getState` flow): a recovery that fails answers error
    /// 112 instead of subscribing with `recovered: false`.
    pub reject_unrecovered: bool,
    /// Wants Fossil delta updates (`delta: "fossil"`).
    pub delta: bool,
}

impl StreamRequest {
    /// Whether delta updates are granted: asked for, and allowed by the channel's options
    /// (otherwise the subscription goes on without them, as in Centrifugo).
    pub fn delta_granted(&self, opts: &ChannelOptions) -> bool {
        self.delta
            && opts
                .allowed_delta_types
                .iter()
                .any(|t| t == crate::protocol::delta::FOSSIL)
    }
}

/// What the permission check granted.
#[derive(Debug, Default)]
pub struct Grant {
    /// `chan_info` for ClientInfo.
    pub chan_info: Option<Raw>,
    /// Subscription expiry (unix seconds; 0 = never).
    pub expires_at: u64,
    /// `data` for the reply.
    pub data: Option<Raw>,
}

/// Computes a channel's subscribe result (position, recovery) from a consistent state view.
pub fn subscribe_result(
    node: &Node,
    sm: &StateMachine,
    channel: &str,
    opts: &ChannelOptions,
    req: &StreamRequest,
    grant: &Grant,
) -> SubscribeResult {
    let history = opts.history_enabled();
    let recoverable = history && (req.recoverable || opts.force_recovery);
    let positioned = history && (req.positioned || opts.force_positioning || recoverable);
    let mut res = SubscribeResult {
        data: grant.data.clone(),
        delta: req.delta_granted(opts),
        ..Default::default()
    };
    if grant.expires_at > 0 {
        res.expires = true;
        res.ttl = crate::auth::ttl_until(grant.expires_at);
    }
    if positioned {
        let (top, epoch) = sm.position(channel).unwrap_or_default();
        res.positioned = true;
        res.recoverable = recoverable;
        res.offset = top;
        res.epoch = epoch;
        if req.recover && recoverable {
            res.was_recovering = true;
            let max = node.cfg.client.recovery_max_publications;
            match sm.recover(channel, req.offset, &req.epoch, max, Engine::now_ms(sm)) {
                Recovery::Recovered(pubs) => {
                    res.recovered = true;
                    // Recovered publications go in full; with delta updates, as JSON strings.
                    res.publications = if res.delta {
                        pubs.iter()
                            .map(|p| Arc::new(quoted_publication(p)))
                            .collect()
                    } else {
                        pubs
                    };
                    // The client advances its offset by each publication's own offset.
                    res.offset = req.offset;
                }
                Recovery::Failed => {}
            }
        }
    }
    res
}

/// `p` as sent in full to a delta subscriber: its data as a JSON string.
fn quoted_publication(p: &Publication) -> Publication {
    Publication {
        data: crate::protocol::delta::quoted(&p.data),
        ..p.clone()
    }
}

/// The client's recovery position is in this node's current stream but beyond what it has
/// applied.
fn behind(node: &Node, channel: &str, offset: u64, epoch: &str) -> bool {
    node.engine.read(|sm| {
        sm.position(channel)
            .is_some_and(|(top, e)| e == epoch && offset > top)
    })
}

/// When a client recovering `channel` from `offset`/`epoch` saw a publication this node has
/// not applied yet (it came from a node further ahead, e.g. the old leader), waits, bounded,
/// until this node has applied what the leader had committed, so recovery is exact instead of
/// "not recovered". Returns whether it waited.
pub async fn catch_up_to(node: &Node, channel: &str, offset: u64, epoch: &str) -> bool {
    if !behind(node, channel, offset, epoch) {
        return false;
    }
    if !node.catch_up().await {
        tracing::debug!(channel, offset, "recovery: could not catch up in time");
    }
    true
}

/// Subscribes `conn` to `channel`: registers it and queues the encoded result atomically with
/// respect to apply, then records presence / announces the join. The caller checked
/// permissions.
pub async fn subscribe(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    channel: &str,
    opts: &ChannelOptions,
    req: &StreamRequest,
    grant: Grant,
    encode: impl FnOnce(SubscribeResult) -> Bytes,
) -> Result<(), ErrorCode> {
    if opts.history_enabled()
        && (req.positioned || req.recoverable || opts.force_positioning || opts.force_recovery)
    {
        crate::ops::ensure_stream(node, channel, opts).await?;
    }
    if req.recover {
        catch_up_to(node, channel, req.offset, &req.epoch).await;
    }
    let join = node.engine.read(|sm| {
        let res = subscribe_result(node, sm, channel, opts, req, &grant);
        if req.reject_unrecovered && res.was_recovering && !res.recovered {
            return Err(codes::UNRECOVERABLE_POSITION);
        }
        let mut st = conn.state.lock();
        let join = register(node, conn, &mut st, channel, opts, req, &grant);
        let _ = conn.out.push(encode(res));
        Ok(join)
    })?;
    if let Some(op) = join {
        propose_joins(node, conn, vec![op]).await;
    }
    Ok(())
}

/// Records the subscription on the connection and in the hub; returns the join operation to
/// propose, if the channel keeps presence or announces joins. Call it under the engine's read
/// lock, together with queueing the reply that carries the position.
pub fn register(
    node: &Node,
    conn: &Conn,
    st: &mut ConnState,
    channel: &str,
    opts: &ChannelOptions,
    req: &StreamRequest,
    grant: &Grant,
) -> Option<Op> {
    st.subs.insert(
        channel.to_string(),
        SubState {
            chan_info: grant.chan_info.clone(),
            presence: opts.presence,
            join_leave: opts.join_leave,
            expires_at: grant.expires_at,
        },
    );
    conn.refresh_sub_expiry(st);
    node.engine.hub.subscribe(
        channel,
        conn.id,
        Subscriber {
            out: conn.out.clone(),
            join_leave: opts.join_leave && (req.join_leave || opts.force_push_join_leave),
            delta: req.delta_granted(opts),
        },
    );
    (opts.presence || opts.join_leave).then(|| Op::Join {
        channel: channel.to_string(),
        info: st.client_info(channel),
        node: node.cfg.node.id,
        incarnation: node.incarnation,
        presence: opts.presence,
        join_leave: opts.join_leave,
    })
}

/// Proposes join operations. If they fail (no leader, a fault), they are retried in the
/// background while `conn` is open and still subscribed, so presence converges after the
/// fault; the subscription itself stands meanwhile.
pub async fn propose_joins(node: &Arc<Node>, conn: &Arc<Conn>, ops: Vec<Op>) {
    propose_presence(node, conn, ops, "join").await;
}

/// Proposes or, on failure, keeps retrying presence changes (see [`retry_presence`]).
async fn propose_presence(node: &Arc<Node>, conn: &Arc<Conn>, ops: Vec<Op>, what: &'static str) {
    if let Err(e) = node.replicator.propose(ops.clone()).await {
        tracing::warn!(error = %e, what, "presence change not committed: retrying");
        tokio::spawn(retry_presence(node.clone(), conn.clone(), ops, what));
    }
}

/// Longest a failed leave is retried (the connection is gone; a node's incarnation change
/// clears what is left).
const LEAVE_RETRY_FOR: Duration = Duration::from_secs(300);

/// Retries presence changes with backoff (0.1 s doubling to 2 s) until they commit. A join is
/// dropped once its connection closes or leaves the channel; a leave once the connection is
/// subscribed to the channel again, or after [`LEAVE_RETRY_FOR`]; all of them when the node
/// stops.
async fn retry_presence(node: Arc<Node>, conn: Arc<Conn>, mut ops: Vec<Op>, what: &'static str) {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        let closing = conn.out.is_closing();
        ops.retain(|op| match op {
            Op::Join { channel, .. } => !closing && conn.state.lock().subs.contains_key(channel),
            Op::Leave { channel, .. } => {
                started.elapsed() < LEAVE_RETRY_FOR && !conn.state.lock().subs.contains_key(channel)
            }
            _ => false,
        });
        if ops.is_empty() || node.is_stopping() {
            return;
        }
        match node.replicator.propose(ops.clone()).await {
            Ok(_) => {
                tracing::info!(
                    what,
                    ops = ops.len(),
                    "presence change committed after a retry"
                );
                return;
            }
            Err(e) => tracing::debug!(error = %e, what, "presence change still not committed"),
        }
    }
}

/// Removes `conn` from `channel`; returns the leave operation to propose, if any.
pub fn unsubscribe_local(node: &Node, conn: &Conn, channel: &str) -> Option<Op> {
    let mut st = conn.state.lock();
    let info = st.client_info(channel);
    let sub = st.subs.remove(channel)?;
    conn.refresh_sub_expiry(&st);
    drop(st);
    node.engine.hub.unsubscribe(channel, conn.id);
    (sub.presence || sub.join_leave).then(|| Op::Leave {
        channel: channel.to_string(),
        info,
        presence: sub.presence,
        join_leave: sub.join_leave,
    })
}

/// Proposes leave operations of `conn`, retried in the background if they fail (see
/// [`retry_presence`]).
pub async fn propose_leaves(node: &Arc<Node>, conn: &Arc<Conn>, ops: Vec<Op>) {
    propose_presence(node, conn, ops, "leave").await;
}

/// Server-side subscribe (API `subscribe`): no permission check; the client learns of it from
/// a `subscribe` push.
pub async fn server_subscribe(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    channel: &str,
    opts: &ChannelOptions,
) -> Result<(), ErrorCode> {
    if conn.state.lock().subs.contains_key(channel) {
        return Ok(());
    }
    if conn.state.lock().subs.len() >= node.cfg.client.max_channels {
        metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "max_channels").increment(1);
        return Err(codes::LIMIT_EXCEEDED);
    }
    let req = StreamRequest {
        positioned: opts.force_positioning,
        recoverable: opts.force_recovery,
        join_leave: true,
        ..Default::default()
    };
    subscribe(node, conn, channel, opts, &req, Grant::default(), |res| {
        encode_push(channel, "subscribe", &res)
    })
    .await
}

/// Server-side unsubscribe (API `unsubscribe`): the client gets an `unsubscribe` push.
pub async fn server_unsubscribe(node: &Arc<Node>, conn: &Arc<Conn>, channel: &str) {
    let was = conn.state.lock().subs.contains_key(channel);
    if !was {
        return;
    }
    let leave = unsubscribe_local(node, conn, channel);
    let push = encode_push(
        channel,
        "unsubscribe",
        &UnsubscribePush {
            code: codes::UNSUBSCRIBE_SERVER,
            reason: "server unsubscribe",
        },
    );
    let _ = conn.out.push(push);
    if let Some(op) = leave {
        propose_leaves(node, conn, vec![op]).await;
    }
}
