//! Operations shared by the client protocol and the server API: publish, history, presence,
//! subscribe-side stream creation, and the one place a publication's op is built. Permission
//! checks stay with the callers.

use std::collections::BTreeMap;

use crate::config::{ApiConfig, ChannelOptions};
use crate::engine::Engine;
use crate::node::Node;
use crate::protocol::{
    ClientInfo, ErrorCode, HistoryResult, Payload, PresenceResult, PresenceStatsResult,
    StreamPosition, codes,
};
use crate::replicator::ProposeError;
use crate::state::{HistoryPolicy, IdempotencyKey, Op, OpResult};

/// Longest `idempotency_key` accepted, in bytes; a longer one is refused with 107.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// A publication as a caller hands it in, before it becomes an [`Op`].
pub struct Publication {
    /// The payload (JSON or binary).
    pub data: Payload,
    /// The publisher, for client publications.
    pub info: Option<ClientInfo>,
    /// Tags (server API).
    pub tags: Option<BTreeMap<String, String>>,
    /// Keep it out of the channel's history (server API `skip_history`).
    pub skip_history: bool,
    /// De-duplicate retries by this key (server API `idempotency_key`); see [`idempotency`].
    pub idempotency: Option<IdempotencyKey>,
}

/// A server API `idempotency_key` checked (107 over [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, whether
/// or not keys are on) and resolved with this node's `api.idempotency_window` and
/// `api.idempotency_max_keys`, which then travel in the op. `None` for no key, an empty key,
/// or a window of 0 (off).
pub fn idempotency(
    cfg: &ApiConfig,
    key: Option<String>,
) -> Result<Option<IdempotencyKey>, ErrorCode> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(codes::BAD_REQUEST);
    }
    if cfg.idempotency_window.is_zero() {
        return Ok(None);
    }
    Ok(Some(IdempotencyKey {
        key,
        window_ms: cfg.idempotency_window.as_millis() as u64,
        max_keys: cfg.idempotency_max_keys,
    }))
}

/// The op that publishes `p` to `channel` with the namespace's history policy.
pub fn publish_op(channel: &str, opts: &ChannelOptions, p: Publication) -> Op {
    let history = if p.skip_history {
        HistoryPolicy::NONE
    } else {
        history_policy(opts)
    };
    let (data, binary) = p.data.into_stored();
    Op::Publish {
        channel: channel.to_string(),
        data,
        binary,
        info: p.info,
        tags: p.tags,
        history,
        new_epoch: new_epoch(),
        idempotency: p.idempotency,
    }
}

/// Publishes and waits for the commit; returns `(offset, epoch)` (0 and "" without history).
pub async fn publish(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
    p: Publication,
) -> Result<(u64, String), ErrorCode> {
    submit_publish(node, channel, opts, p).await?.await
}

/// Hands a publication to the replicator without waiting for its commit: once this returns,
/// it is queued behind everything submitted before it. The returned future resolves with
/// `(offset, epoch)` when its entry commits.
pub async fn submit_publish(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
    p: Publication,
) -> Result<impl Future<Output = Result<(u64, String), ErrorCode>> + Send + 'static, ErrorCode> {
    let channel = channel.to_string();
    let pending = node
        .replicator
        .submit(vec![publish_op(&channel, opts, p)])
        .await
        .map_err(|e| not_committed(&channel, &e))?;
    Ok(async move {
        match pending.await {
            Ok((mut results, _)) => match results.pop() {
                Some(OpResult::Position { offset, epoch }) => Ok((offset, epoch)),
                Some(OpResult::Done) => Ok((0, String::new())),
                None => Err(not_committed(&channel, &ProposeError::Failed)),
            },
            Err(e) => Err(not_committed(&channel, &e)),
        }
    })
}

/// A publication that did not commit, as clients see it (100, temporary).
fn not_committed(channel: &str, e: &ProposeError) -> ErrorCode {
    tracing::warn!(channel, error = %e, "publish not committed");
    codes::INTERNAL
}

/// Creates the channel's stream if it has history and none exists yet, so that a position
/// (with a replicated epoch) can be given before the first publication.
pub async fn ensure_stream(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
) -> Result<(), ErrorCode> {
    if !opts.history_enabled() || node.engine.read(|sm| sm.position(channel).is_some()) {
        return Ok(());
    }
    let op = Op::EnsureStream {
        channel: channel.to_string(),
        history: history_policy(opts),
        new_epoch: new_epoch(),
    };
    node.replicator
        .propose_one(op)
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::warn!(channel, error = %e, "stream creation not committed");
            codes::INTERNAL
        })
}

/// `history`: 108 without history; `limit` 0 = position only, -1 = all up to the cap;
/// a `since` in another epoch = 112.
pub async fn history(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
    limit: i64,
    since: Option<StreamPosition>,
    reverse: bool,
) -> Result<HistoryResult, ErrorCode> {
    if !opts.history_enabled() {
        return Err(codes::NOT_AVAILABLE);
    }
    let cap = node.cfg.client.history_max_publications;
    let limit = match limit {
        -1 => cap,
        n if n < -1 => return Err(codes::BAD_REQUEST),
        n => (n as usize).min(cap),
    };
    ensure_stream(node, channel, opts).await?;
    node.engine.read(|sm| {
        let (offset, epoch) = sm.position(channel).unwrap_or_default();
        if let Some(since) = &since
            && since.epoch != epoch
        {
            return Err(codes::UNRECOVERABLE_POSITION);
        }
        let publications = if limit == 0 {
            Vec::new()
        } else {
            sm.history(
                channel,
                since.map(|s| s.offset),
                limit,
                reverse,
                Engine::now_ms(sm),
            )
        };
        Ok(HistoryResult {
            publications,
            epoch,
            offset,
        })
    })
}

/// `presence`: 108 when the namespace keeps none.
pub fn presence(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
) -> Result<PresenceResult, ErrorCode> {
    if !opts.presence {
        return Err(codes::NOT_AVAILABLE);
    }
    Ok(PresenceResult {
        presence: node.engine.read(|sm| sm.presence(channel)),
    })
}

/// `presence_stats`: 108 when the namespace keeps no presence.
pub fn presence_stats(
    node: &Node,
    channel: &str,
    opts: &ChannelOptions,
) -> Result<PresenceStatsResult, ErrorCode> {
    if !opts.presence {
        return Err(codes::NOT_AVAILABLE);
    }
    Ok(node.engine.read(|sm| sm.presence_stats(channel)))
}

/// The history policy a channel's options give.
pub fn history_policy(opts: &ChannelOptions) -> HistoryPolicy {
    if opts.history_enabled() {
        HistoryPolicy {
            size: opts.history_size,
            ttl_ms: opts.history_ttl.as_millis() as u64,
        }
    } else {
        HistoryPolicy::NONE
    }
}

/// A fresh random epoch for a stream that a proposal may create.
pub fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
