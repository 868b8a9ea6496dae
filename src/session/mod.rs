//! One connected client: connect and auth, command dispatch, subscriptions, permissions.
//!
//! The transport hands the session whole messages (text for JSON, binary for Protobuf); the
//! session decodes the commands in order, answers each through the connection's outbound
//! queue (in the connection's encoding) and returns a [`Disconnect`] when the connection must
//! end. Timers (ping, pong, stale, expiry) live in the writer.

pub mod presence_sync;
mod proxy;
pub mod reactions;
pub mod subscribe;
mod unidirectional;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::auth::{TokenError, ttl_until};
use crate::channels::{is_private, user_limited_allows};
use crate::config::ChannelOptions;
use crate::conn::Conn;
use crate::node::Node;
use crate::ops;
use crate::protocol::json::lines;
use crate::protocol::protobuf::{self, FrameError};
use crate::protocol::types::*;
use crate::protocol::{
    Command, DecodeError, Disconnect, Encoding, ErrorCode, Method, ReplyBody, codes,
};
use crate::proxy::ChannelHook;

use subscribe::{Grant, StreamRequest, propose_leaves, unsubscribe_local};

/// Server version reported to clients.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How a command failed.
#[derive(Debug)]
enum Fail {
    /// Answer with an error reply and go on.
    Error(ErrorCode),
    /// End the connection.
    Disconnect(Disconnect),
    /// Answer with an error the application's backend chose (through a proxy).
    Backend(crate::proxy::types::BackendError),
    /// End the connection with a code and reason the application's backend chose.
    Close(u16, String),
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Self {
        Fail::Error(e)
    }
}

/// `Ok(Some(bytes))`: queue this reply; `Ok(None)`: already queued or no reply.
type Handled = Result<Option<Vec<u8>>, Fail>;

/// The protocol state of one connection, driven by its reader task.
pub struct Session {
    node: Arc<Node>,
    conn: Arc<Conn>,
    /// `client.command_rate`, when set.
    limiter: Option<crate::limits::CommandLimiter>,
    /// Bounds the proposals in flight (made on the first publish).
    inflight: Option<Arc<tokio::sync::Semaphore>>,
    /// Refresh timers run through proxies: the connection's (key "") and each
    /// subscription's (key: the channel); aborted when they no longer apply.
    refreshers: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// Answers command `id` with error `e` (counted and logged at debug).
fn reply_error(conn: &Conn, id: u32, method: &str, e: &ErrorCode) {
    tracing::debug!(conn = conn.id, method, code = e.code, "command error");
    metrics::counter!(crate::metrics::COMMAND_ERRORS, "code" => e.code.to_string()).increment(1);
    let enc = conn.out.encoding();
    let _ = conn
        .out
        .push(enc.error(id, e.code, e.message, e.temporary).into());
}

impl Session {
    /// A session for a freshly upgraded connection.
    pub fn new(node: Arc<Node>, conn: Arc<Conn>) -> Session {
        let limiter = node.limits.command_limiter();
        Session {
            node,
            conn,
            limiter,
            inflight: None,
            refreshers: HashMap::new(),
        }
    }

    /// The connection's encoding.
    fn enc(&self) -> Encoding {
        self.conn.out.encoding()
    }

    /// Handles one message (JSON: text, newline-separated commands; Protobuf: binary,
    /// length-delimited commands), in order. An undecodable command ends the connection
    /// (3501; a Protobuf length over `client.max_message_size`: 1009) after those before it.
    pub async fn handle_message(&mut self, msg: &[u8]) -> Result<(), Disconnect> {
        match self.enc() {
            Encoding::Json => {
                for line in lines(msg) {
                    metrics::counter!(crate::metrics::MESSAGES_IN).increment(1);
                    let cmd = crate::protocol::json::decode_command(line)
                        .map_err(|e| self.undecodable(&e))?;
                    if !self.take(cmd).await? {
                        return Ok(());
                    }
                }
            }
            Encoding::Protobuf => {
                let max = self.node.cfg.client.max_message_size;
                for part in protobuf::split(msg, max) {
                    metrics::counter!(crate::metrics::MESSAGES_IN).increment(1);
                    let cmd = match part {
                        Ok(b) => protobuf::decode_command(b).map_err(|e| self.undecodable(&e))?,
                        Err(FrameError::TooBig(len)) => {
                            tracing::debug!(
                                conn = self.conn.id,
                                len,
                                "protobuf command over the size limit"
                            );
                            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "max_message_size")
                                .increment(1);
                            return Err(codes::MESSAGE_TOO_BIG);
                        }
                        Err(FrameError::Decode(e)) => return Err(self.undecodable(&e)),
                    };
                    if !self.take(cmd).await? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn undecodable(&self, e: &DecodeError) -> Disconnect {
        tracing::debug!(conn = self.conn.id, error = %e, "undecodable command");
        codes::BAD_REQUEST_DISCONNECT
    }

    /// Counts, rate-limits and handles one decoded command; false when the connection is
    /// closing and nothing more should be read.
    async fn take(&mut self, cmd: Command) -> Result<bool, Disconnect> {
        if self.conn.out.is_closing() {
            return Ok(false);
        }
        // Pongs are the server's own keep-alive: not counted as commands, never limited.
        let pong = matches!(cmd.method, Method::Pong);
        if !pong {
            metrics::counter!(crate::metrics::COMMANDS).increment(1);
        }
        if !pong && let Some(l) = &mut self.limiter {
            match l.check() {
                crate::limits::Verdict::Allow => {}
                crate::limits::Verdict::Refuse => {
                    let e = codes::TOO_MANY_REQUESTS;
                    metrics::counter!(crate::metrics::COMMAND_ERRORS, "code" => e.code.to_string())
                        .increment(1);
                    if cmd.id > 0 {
                        let reply = self.enc().error(cmd.id, e.code, e.message, e.temporary);
                        let _ = self.conn.out.push(reply.into());
                    }
                    return Ok(true);
                }
                crate::limits::Verdict::Disconnect => {
                    tracing::info!(
                        conn = self.conn.id,
                        "command flood past the rate limit: disconnecting"
                    );
                    return Err(codes::TOO_MANY_REQUESTS_DISCONNECT);
                }
            }
        }
        self.handle(cmd).await?;
        Ok(true)
    }

    async fn handle(&mut self, cmd: Command) -> Result<(), Disconnect> {
        let id = cmd.id;
        let method = cmd.method.name();
        let connected = self.conn.connected.load(Ordering::Acquire);
        let res = match cmd.method {
            Method::Connect(r) => self.connect(id, r).await,
            _ if !connected => Err(Fail::Disconnect(codes::BAD_REQUEST_DISCONNECT)),
            Method::Subscribe(r) => self.subscribe(id, r).await,
            Method::Unsubscribe(r) => self.unsubscribe(id, r).await,
            Method::Publish(r) => self.publish(id, r).await,
            Method::Presence(r) => self.presence(id, r),
            Method::PresenceStats(r) => self.presence_stats(id, r),
            Method::History(r) => self.history(id, r).await,
            Method::Rpc(r) => self.rpc(id, r).await,
            Method::Send(_) => Ok(None),
            Method::Refresh(r) => self.refresh(id, r),
            Method::SubRefresh(r) => self.sub_refresh(id, r),
            Method::Pong => {
                self.conn.pongs.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Method::Unknown => Err(codes::METHOD_NOT_FOUND.into()),
        };
        match res {
            Ok(Some(reply)) => {
                let _ = self.conn.out.push(reply.into());
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(Fail::Error(e)) => {
                reply_error(&self.conn, id, method, &e);
                Ok(())
            }
            Err(Fail::Disconnect(d)) => Err(d),
            Err(Fail::Backend(e)) => {
                tracing::debug!(conn = self.conn.id, method, code = e.code, "backend error");
                metrics::counter!(crate::metrics::COMMAND_ERRORS, "code" => e.code.to_string())
                    .increment(1);
                let reply = self.enc().error(id, e.code, &e.message, e.temporary);
                let _ = self.conn.out.push(reply.into());
                Ok(())
            }
            Err(Fail::Close(code, reason)) => {
                tracing::info!(conn = self.conn.id, method, code, reason = %reason, "backend disconnect");
                self.conn.out.close_with(code, &reason);
                Ok(())
            }
        }
    }

    fn resolve(&self, channel: &str) -> Result<ChannelOptions, Fail> {
        Ok(self.node.channels.resolve(channel)?.clone())
    }

    fn is_subscribed(&self, channel: &str) -> bool {
        self.conn.state.lock().subs.contains_key(channel)
    }

    async fn connect(&mut self, id: u32, req: ConnectRequest) -> Handled {
        if self.conn.connected.load(Ordering::Acquire) {
            return Err(Fail::Disconnect(codes::BAD_REQUEST_DISCONNECT));
        }
        if req.name.chars().count() > 16 || req.version.chars().count() > 64 {
            return Err(Fail::Disconnect(codes::BAD_REQUEST_DISCONNECT));
        }
        let client = uuid::Uuid::new_v4().to_string();
        let mut ident = self.authenticate(&req, &client).await?;
        {
            let mut st = self.conn.state.lock();
            st.user = ident.user.clone();
            st.client = client.clone();
            st.conn_info = ident.info.clone();
            st.meta = ident.meta.take();
        }
        let expires_at = ident.expires_at;
        if !ident.server_refresh {
            self.conn.expires_at.store(expires_at, Ordering::Relaxed);
        }

        // Server-side subscriptions named by the token or the connect proxy, and the user's
        // personal channel.
        let mut server_subs: Vec<(String, ChannelOptions)> = Vec::new();
        let personal = personal_channel(&self.node.cfg.client, &ident.user);
        for ch in ident.channels.iter().chain(personal.iter()) {
            if server_subs.iter().any(|(c, _)| c == ch) {
                continue;
            }
            match self.node.channels.resolve(ch) {
                Ok(o) => server_subs.push((ch.clone(), o.clone())),
                Err(e) => {
                    tracing::info!(conn = self.conn.id, channel = %ch, code = e.code, "server-side channel skipped");
                }
            }
        }
        if server_subs.len() > self.node.cfg.client.max_channels {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "max_channels").increment(1);
            return Err(Fail::Disconnect(codes::CHANNEL_LIMIT));
        }
        for (ch, opts) in &server_subs {
            ops::ensure_stream(&self.node, ch, opts).await?;
        }
        // One wait covers every channel: it catches up to the leader's commit.
        for (ch, _) in &server_subs {
            if let Some(s) = req.subs.get(ch).filter(|s| s.recover)
                && subscribe::catch_up_to(&self.node, ch, s.offset, &s.epoch).await
            {
                break;
            }
        }

        let cfg = &self.node.cfg;
        let mut result = ConnectResult {
            client: client.clone(),
            version: VERSION.into(),
            ping: cfg.client.ping_interval.as_secs().max(1) as u32,
            pong: true,
            node: cfg.node_name(),
            session: self.conn.session.clone(),
            data: ident.data,
            ..Default::default()
        };
        if expires_at > 0 && !ident.server_refresh {
            result.expires = true;
            result.ttl = ttl_until(expires_at);
        }
        let node = self.node.clone();
        let conn = self.conn.clone();
        let enc = self.enc();
        let joins = node.engine.read(|sm| {
            let mut joins = Vec::new();
            let mut st = conn.state.lock();
            for (ch, opts) in &server_subs {
                let sreq = match req.subs.get(ch) {
                    Some(s) => StreamRequest {
                        recover: s.recover,
                        offset: s.offset,
                        epoch: s.epoch.clone(),
                        positioned: true,
                        recoverable: true,
                        join_leave: true,
                        reject_unrecovered: false,
                        delta: false,
                    },
                    None => StreamRequest {
                        join_leave: true,
                        ..Default::default()
                    },
                };
                let grant = Grant::default();
                let res = subscribe::subscribe_result(&node, sm, ch, opts, (&sreq, enc), &grant);
                joins.extend(subscribe::register(
                    &node, &conn, &mut st, ch, opts, &sreq, &grant,
                ));
                result.subs.insert(ch.clone(), res);
            }
            let _ = conn
                .out
                .push(enc.reply(id, &ReplyBody::Connect(&result)).into());
            joins
        });
        self.conn.connected.store(true, Ordering::Release);
        if ident.server_refresh && expires_at > 0 {
            let task = proxy::spawn_refresh(self.node.clone(), self.conn.clone(), expires_at);
            self.refreshers.insert(String::new(), task);
        }
        let user = self.conn.state.lock().user.clone();
        self.node.registry.add(&user, self.conn.clone());
        tracing::info!(conn = self.conn.id, client = %client, user = %user, "client connected");
        if !joins.is_empty() {
            subscribe::propose_joins(&self.node, &self.conn, joins).await;
        }
        Ok(None)
    }

    /// Who the connecting client is: from its token, or (without one) from the connect
    /// proxy when configured, else anonymous when allowed.
    async fn authenticate(
        &self,
        req: &ConnectRequest,
        client: &str,
    ) -> Result<proxy::Identity, Fail> {
        if req.token.is_empty() {
            if let Some(ep) = self.node.proxy.connect() {
                return proxy::connect(&self.node, &self.conn, ep, req, client).await;
            }
            if !self.node.cfg.auth.allow_anonymous {
                return Err(Fail::Disconnect(codes::BAD_REQUEST_DISCONNECT));
            }
            return Ok(proxy::Identity::default());
        }
        let claims = match self.node.verifier.connection(&req.token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(codes::TOKEN_EXPIRED.into()),
            Err(TokenError::Invalid(why) | TokenError::Mismatch(why)) => {
                tracing::info!(conn = self.conn.id, reason = %why, "connection token refused");
                return Err(Fail::Disconnect(codes::INVALID_TOKEN));
            }
        };
        let expires_at = claims.expires_at().unwrap_or(0);
        let mut channels = claims.channels;
        channels.extend(claims.subs.into_keys());
        Ok(proxy::Identity {
            user: claims.sub,
            expires_at,
            info: claims.info,
            channels,
            data: None,
            meta: claims.meta,
            server_refresh: false,
        })
    }

    async fn subscribe(&mut self, id: u32, req: SubscribeRequest) -> Handled {
        if req.kind != 0 {
            // Map and shared-poll subscriptions do not exist here (yet).
            return Err(codes::NOT_AVAILABLE.into());
        }
        if !req.delta.is_empty() && req.delta != crate::protocol::delta::FOSSIL {
            // An unknown delta type, as Centrifugo answers it.
            return Err(Fail::Disconnect(codes::BAD_REQUEST_DISCONNECT));
        }
        let channel = req.channel.clone();
        let mut opts = self.resolve(&channel)?;
        let (user, client, count) = {
            let st = self.conn.state.lock();
            if st.subs.contains_key(&channel) {
                return Err(codes::ALREADY_SUBSCRIBED.into());
            }
            (st.user.clone(), st.client.clone(), st.subs.len())
        };
        if count >= self.node.cfg.client.max_channels {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "max_channels").increment(1);
            return Err(codes::LIMIT_EXCEEDED.into());
        }
        let mut grant = self
            .grant(&req, &channel, &mut opts, &user, &client)
            .await?;
        // With a sub_refresh proxy the server, not the client, refreshes the subscription.
        let server_refresh_at = if opts.sub_refresh_proxy {
            std::mem::take(&mut grant.expires_at)
        } else {
            0
        };
        let sreq = StreamRequest {
            recover: req.recover,
            offset: req.offset,
            epoch: req.epoch,
            positioned: req.positioned,
            recoverable: req.recoverable,
            join_leave: req.join_leave,
            reject_unrecovered: req.flag & FLAG_REJECT_UNRECOVERED != 0,
            delta: !req.delta.is_empty(),
        };
        let enc = self.enc();
        subscribe::subscribe(
            &self.node,
            &self.conn,
            &channel,
            &opts,
            &sreq,
            grant,
            |res| enc.reply(id, &ReplyBody::Subscribe(&res)).into(),
        )
        .await?;
        tracing::debug!(conn = self.conn.id, channel = %channel, "subscribed");
        if server_refresh_at > 0 {
            let task = proxy::spawn_sub_refresh(
                self.node.clone(),
                self.conn.clone(),
                channel.clone(),
                opts.sub_refresh_proxy_name.clone(),
                server_refresh_at,
            );
            if let Some(old) = self.refreshers.insert(channel, task) {
                old.abort();
            }
        }
        Ok(None)
    }

    /// What a subscription without a server-side grant may have: from its token, the `$` and
    /// `#` rules, the subscribe proxy (which may also override `opts` for this subscription),
    /// or the namespace's `allow_subscribe_for_client`.
    async fn grant(
        &self,
        req: &SubscribeRequest,
        channel: &str,
        opts: &mut ChannelOptions,
        user: &str,
        client: &str,
    ) -> Result<Grant, Fail> {
        let mut grant = Grant::default();
        if !req.token.is_empty() {
            match self
                .node
                .verifier
                .subscription(&req.token, user, client, channel)
            {
                Ok(c) => {
                    grant.expires_at = c.expires_at().unwrap_or(0);
                    grant.chan_info = c.info;
                    grant.data = c.data;
                }
                Err(TokenError::Expired) => return Err(codes::TOKEN_EXPIRED.into()),
                Err(TokenError::Mismatch(why)) => {
                    tracing::info!(conn = self.conn.id, channel = %channel, reason = %why, "subscription token refused");
                    return Err(Fail::Disconnect(codes::INVALID_TOKEN));
                }
                Err(TokenError::Invalid(why)) => {
                    // Unparsable or badly signed: this subscribe is refused, the connection
                    // stays (as in Centrifugo).
                    tracing::info!(conn = self.conn.id, channel = %channel, reason = %why, "subscription token refused");
                    return Err(codes::PERMISSION_DENIED.into());
                }
            }
        } else if is_private(channel) {
            return Err(codes::PERMISSION_DENIED.into());
        } else if let Some(listed) =
            user_limited_allows(channel, user).filter(|_| opts.allow_user_limited_channels)
        {
            if !listed {
                return Err(codes::PERMISSION_DENIED.into());
            }
        } else if opts.subscribe_proxy {
            let ep = proxy::channel_endpoint(
                &self.node,
                ChannelHook::Subscribe,
                &opts.subscribe_proxy_name,
            );
            let r =
                proxy::subscribe(&self.node, &self.conn, ep, channel, req.data.as_deref()).await?;
            grant.chan_info = r.info;
            grant.data = r.data;
            grant.expires_at = r.expire_at;
            if let Some(o) = r.overrides {
                proxy::apply_override(opts, &o);
            }
        } else if !opts.allow_subscribe_for_client {
            return Err(codes::PERMISSION_DENIED.into());
        }
        Ok(grant)
    }

    async fn unsubscribe(&mut self, id: u32, req: ChannelRequest) -> Handled {
        if let Some(task) = self.refreshers.remove(&req.channel) {
            task.abort();
        }
        let leave = unsubscribe_local(&self.node, &self.conn, &req.channel);
        if let Some(op) = leave {
            propose_leaves(&self.node, &self.conn, vec![op]).await;
        }
        Ok(Some(self.enc().reply(id, &ReplyBody::Unsubscribe)))
    }

    async fn publish(&mut self, id: u32, req: PublishRequest) -> Handled {
        let opts = self.resolve(&req.channel)?;
        let Some(data) = req.data else {
            return Err(codes::BAD_REQUEST.into());
        };
        let (data, skip_history) = if opts.publish_proxy {
            // The backend decides (and may rewrite) before anything is proposed. Its body is
            // JSON: a binary payload cannot be passed on (107).
            let Payload::Json(data) = data else {
                return Err(codes::BAD_REQUEST.into());
            };
            let ep =
                proxy::channel_endpoint(&self.node, ChannelHook::Publish, &opts.publish_proxy_name);
            let r = proxy::publish(&self.node, &self.conn, ep, &req.channel, &data).await?;
            (Payload::Json(r.data.unwrap_or(data)), r.skip_history)
        } else {
            let subscribed = self.is_subscribed(&req.channel);
            if !(opts.allow_publish_for_client || (opts.allow_publish_for_subscriber && subscribed))
            {
                return Err(codes::PERMISSION_DENIED.into());
            }
            (data, false)
        };
        let info = self.conn.state.lock().client_info(&req.channel);
        let p = ops::Publication {
            data,
            info: Some(info),
            tags: None,
            skip_history,
            idempotency: None,
        };
        // Pipelined: submitted in arrival order, answered when its own entry commits. At the
        // bound of proposals in flight this waits, and so the connection is not read.
        let permit = self.inflight_permit().await;
        let committed = ops::submit_publish(&self.node, &req.channel, &opts, p).await?;
        let conn = self.conn.clone();
        let enc = self.enc();
        tokio::spawn(async move {
            match committed.await {
                Ok(_) => {
                    let _ = conn.out.push(enc.reply(id, &ReplyBody::Publish).into());
                }
                Err(e) => reply_error(&conn, id, "publish", &e),
            }
            drop(permit);
        });
        Ok(None)
    }

    /// A slot for one more proposal in flight (`client.max_inflight_proposals`); the
    /// semaphore is made on a connection's first publish, so subscribers never pay for it.
    async fn inflight_permit(&mut self) -> tokio::sync::OwnedSemaphorePermit {
        let max = self.node.cfg.client.max_inflight_proposals;
        let sem = self
            .inflight
            .get_or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max)));
        sem.clone()
            .acquire_owned()
            .await
            .expect("the session never closes its semaphore")
    }

    /// `rpc`: to the proxy of the method's RPC namespace or `[proxy.rpc]`; 108 without one.
    async fn rpc(&mut self, id: u32, req: RpcRequest) -> Handled {
        let Some(ep) = self.node.proxy.rpc(&req.method) else {
            return Err(codes::NOT_AVAILABLE.into());
        };
        let res = proxy::rpc(&self.node, &self.conn, ep, &req.method, req.data.as_deref()).await?;
        Ok(Some(
            self.enc().reply(id, &ReplyBody::Rpc(res.data.as_deref())),
        ))
    }

    fn presence_allowed(&self, channel: &str, opts: &ChannelOptions) -> Result<(), Fail> {
        if opts.allow_presence_for_client
            || (opts.allow_presence_for_subscriber && self.is_subscribed(channel))
        {
            Ok(())
        } else {
            Err(codes::PERMISSION_DENIED.into())
        }
    }

    fn presence(&mut self, id: u32, req: ChannelRequest) -> Handled {
        let opts = self.resolve(&req.channel)?;
        if !opts.presence {
            return Err(codes::NOT_AVAILABLE.into());
        }
        self.presence_allowed(&req.channel, &opts)?;
        let res = ops::presence(&self.node, &req.channel, &opts)?;
        Ok(Some(self.enc().reply(id, &ReplyBody::Presence(&res))))
    }

    fn presence_stats(&mut self, id: u32, req: ChannelRequest) -> Handled {
        let opts = self.resolve(&req.channel)?;
        if !opts.presence {
            return Err(codes::NOT_AVAILABLE.into());
        }
        self.presence_allowed(&req.channel, &opts)?;
        let res = ops::presence_stats(&self.node, &req.channel, &opts)?;
        Ok(Some(self.enc().reply(id, &ReplyBody::PresenceStats(&res))))
    }

    async fn history(&mut self, id: u32, req: HistoryRequest) -> Handled {
        let opts = self.resolve(&req.channel)?;
        if !opts.history_enabled() {
            return Err(codes::NOT_AVAILABLE.into());
        }
        if !(opts.allow_history_for_client
            || (opts.allow_history_for_subscriber && self.is_subscribed(&req.channel)))
        {
            return Err(codes::PERMISSION_DENIED.into());
        }
        let res = ops::history(
            &self.node,
            &req.channel,
            &opts,
            req.limit,
            req.since,
            req.reverse,
        )
        .await?;
        Ok(Some(self.enc().reply(id, &ReplyBody::History(&res))))
    }

    fn refresh(&mut self, id: u32, req: RefreshRequest) -> Handled {
        let claims = match self.node.verifier.connection(&req.token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(codes::TOKEN_EXPIRED.into()),
            Err(TokenError::Invalid(_) | TokenError::Mismatch(_)) => {
                return Err(Fail::Disconnect(codes::INVALID_TOKEN));
            }
        };
        let (user, client) = {
            let st = self.conn.state.lock();
            (st.user.clone(), st.client.clone())
        };
        if claims.sub != user {
            return Err(Fail::Disconnect(codes::INVALID_TOKEN));
        }
        let expires_at = claims.expires_at().unwrap_or(0);
        self.conn.expires_at.store(expires_at, Ordering::Relaxed);
        let res = RefreshResult {
            client,
            version: VERSION.into(),
            expires: expires_at > 0,
            ttl: if expires_at > 0 {
                ttl_until(expires_at)
            } else {
                0
            },
        };
        Ok(Some(self.enc().reply(id, &ReplyBody::Refresh(&res))))
    }

    fn sub_refresh(&mut self, id: u32, req: SubRefreshRequest) -> Handled {
        let (user, client) = {
            let st = self.conn.state.lock();
            if !st.subs.contains_key(&req.channel) {
                return Err(codes::BAD_REQUEST.into());
            }
            (st.user.clone(), st.client.clone())
        };
        let claims = match self
            .node
            .verifier
            .subscription(&req.token, &user, &client, &req.channel)
        {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(codes::TOKEN_EXPIRED.into()),
            Err(TokenError::Invalid(_) | TokenError::Mismatch(_)) => {
                return Err(Fail::Disconnect(codes::INVALID_TOKEN));
            }
        };
        let expires_at = claims.expires_at().unwrap_or(0);
        {
            let mut st = self.conn.state.lock();
            if let Some(s) = st.subs.get_mut(&req.channel) {
                s.expires_at = expires_at;
            }
            self.conn.refresh_sub_expiry(&st);
        }
        let res = SubRefreshResult {
            expires: expires_at > 0,
            ttl: if expires_at > 0 {
                ttl_until(expires_at)
            } else {
                0
            },
        };
        Ok(Some(self.enc().reply(id, &ReplyBody::SubRefresh(&res))))
    }

    /// Leaves every channel and forgets the connection; called once when it ends.
    pub async fn close(&mut self) {
        for (_, task) in self.refreshers.drain() {
            task.abort();
        }
        let (user, client, channels): (String, String, Vec<String>) = {
            let st = self.conn.state.lock();
            (
                st.user.clone(),
                st.client.clone(),
                st.subs.keys().cloned().collect(),
            )
        };
        let leaves: Vec<_> = channels
            .iter()
            .filter_map(|ch| unsubscribe_local(&self.node, &self.conn, ch))
            .collect();
        if self.conn.connected.load(Ordering::Acquire) {
            self.node.registry.remove(&user, self.conn.id);
            let (code, reason) = self.conn.out.closed_with().unwrap_or((1006, String::new()));
            tracing::info!(
                conn = self.conn.id,
                client = %client,
                user = %user,
                code,
                reason = %reason,
                channels = channels.len(),
                "client disconnected"
            );
        }
        if !leaves.is_empty() {
            propose_leaves(&self.node, &self.conn, leaves).await;
        }
    }
}

/// The personal channel `user` is subscribed to at connect, when configured (never for
/// anonymous connections).
fn personal_channel(cfg: &crate::config::ClientConfig, user: &str) -> Option<String> {
    if !cfg.subscribe_to_user_personal_channel || user.is_empty() {
        return None;
    }
    Some(match cfg.personal_channel_namespace.as_str() {
        "" => format!("#{user}"),
        ns => format!("{ns}:#{user}"),
    })
}
