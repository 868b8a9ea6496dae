//! Operations shared by the client protocol and the server API: publish, history, presence,
//! subscribe-side stream creation. Permission checks stay with the callers.

use std::collections::BTreeMap;

use crate::config::ChannelOptions;
use crate::engine::Engine;
use crate::node::{Node, history_policy, new_epoch};
use crate::protocol::{
    ClientInfo, ErrorCode, HistoryResult, PresenceResult, PresenceStatsResult, Raw, StreamPosition,
    codes,
};
use crate::state::{HistoryPolicy, Op, OpResult};

impl Node {
    /// Publishes and waits for the commit; returns `(offset, epoch)` (0 and "" without history).
    pub async fn publish(
        &self,
        channel: &str,
        opts: &ChannelOptions,
        data: Raw,
        info: Option<ClientInfo>,
        tags: Option<BTreeMap<String, String>>,
        skip_history: bool,
    ) -> Result<(u64, String), ErrorCode> {
        let history = if skip_history {
            HistoryPolicy::NONE
        } else {
            history_policy(opts)
        };
        let op = Op::Publish {
            channel: channel.to_string(),
            data,
            info,
            tags,
            history,
            new_epoch: new_epoch(),
        };
        match self.log.propose_one(op).await {
            Ok(OpResult::Position { offset, epoch }) => Ok((offset, epoch)),
            Ok(OpResult::Done) => Ok((0, String::new())),
            Err(e) => {
                tracing::warn!(channel, error = %e, "publish not committed");
                Err(codes::INTERNAL)
            }
        }
    }

    /// Creates the channel's stream if it has history and none exists yet, so that a position
    /// (with a replicated epoch) can be given before the first publication.
    pub async fn ensure_stream(
        &self,
        channel: &str,
        opts: &ChannelOptions,
    ) -> Result<(), ErrorCode> {
        if !opts.history_enabled() || self.engine.read(|sm| sm.position(channel).is_some()) {
            return Ok(());
        }
        let op = Op::EnsureStream {
            channel: channel.to_string(),
            history: history_policy(opts),
            new_epoch: new_epoch(),
        };
        self.log.propose_one(op).await.map(|_| ()).map_err(|e| {
            tracing::warn!(channel, error = %e, "stream creation not committed");
            codes::INTERNAL
        })
    }

    /// `history`: 108 without history; `limit` 0 = position only, -1 = all up to the cap;
    /// a `since` in another epoch = 112.
    pub async fn history(
        &self,
        channel: &str,
        opts: &ChannelOptions,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistoryResult, ErrorCode> {
        if !opts.history_enabled() {
            return Err(codes::NOT_AVAILABLE);
        }
        let cap = self.cfg.client.history_max_publications;
        let limit = match limit {
            -1 => cap,
            n if n < -1 => return Err(codes::BAD_REQUEST),
            n => (n as usize).min(cap),
        };
        self.ensure_stream(channel, opts).await?;
        self.engine.read(|sm| {
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
        &self,
        channel: &str,
        opts: &ChannelOptions,
    ) -> Result<PresenceResult, ErrorCode> {
        if !opts.presence {
            return Err(codes::NOT_AVAILABLE);
        }
        Ok(PresenceResult {
            presence: self.engine.read(|sm| sm.presence(channel)),
        })
    }

    /// `presence_stats`: 108 when the namespace keeps no presence.
    pub fn presence_stats(
        &self,
        channel: &str,
        opts: &ChannelOptions,
    ) -> Result<PresenceStatsResult, ErrorCode> {
        if !opts.presence {
            return Err(codes::NOT_AVAILABLE);
        }
        Ok(self.engine.read(|sm| sm.presence_stats(channel)))
    }
}
