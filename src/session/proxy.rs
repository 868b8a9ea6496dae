//! The session's side of proxy hooks: building each request from the connection, turning the
//! backend's verdict into a result or a [`Fail`], and the timers that refresh expiring
//! connections and subscriptions through the backend.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::auth::unix_now;
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::{ConnectRequest, Raw, codes};
use crate::proxy::types::{self, Who};
use crate::proxy::{ChannelHook, Endpoint, Verdict};

use super::Fail;

/// The transport, protocol and encoding every request names (the only ones served yet).
const TRANSPORT: &str = "websocket";
const PROTOCOL: &str = "json";
const ENCODING: &str = "json";

/// After a refresh or sub_refresh call that failed, the connection or subscription lives
/// this much longer and the backend is asked again (Centrifugo does the same).
pub const REFRESH_RETRY: Duration = Duration::from_secs(60);

/// The fields every request starts with.
fn who<'a>(client: &'a str, user: Option<&'a str>, meta: Option<&'a RawValue>) -> Who<'a> {
    Who {
        client,
        transport: TRANSPORT,
        protocol: PROTOCOL,
        encoding: ENCODING,
        user,
        meta,
    }
}

/// Calls `ep` and turns its verdict into the result or a [`Fail`]: the backend's error and
/// disconnect pass through, a failure is the temporary error 100.
async fn ask<Req: Serialize, Res: DeserializeOwned>(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    req: &Req,
) -> Result<Res, Fail> {
    match node.proxy.call(ep, &conn.headers, req).await {
        Ok(Verdict::Result(r)) => Ok(r),
        Ok(Verdict::Error(e)) => Err(Fail::Backend(e)),
        Ok(Verdict::Disconnect(d)) => Err(Fail::Close(d.code, d.reason)),
        Err(_) => Err(Fail::Error(codes::INTERNAL)),
    }
}

/// The connection's (client, user, meta): meta only for a proxy that includes it.
fn identity(conn: &Conn, ep: &Endpoint) -> (String, String, Option<Raw>) {
    let st = conn.state.lock();
    let meta = st.meta.clone().filter(|_| ep.include_meta);
    (st.client.clone(), st.user.clone(), meta)
}

/// Who a connection authenticated as, from a token or the connect proxy.
#[derive(Debug, Default)]
pub struct Identity {
    /// User id ("" = anonymous).
    pub user: String,
    /// Connection expiry (unix seconds; 0 = never).
    pub expires_at: u64,
    /// `conn_info`.
    pub info: Option<Raw>,
    /// Server-side subscriptions, without repeats.
    pub channels: Vec<String>,
    /// `data` for the connect reply.
    pub data: Option<Raw>,
    /// Kept for proxy calls (`include_connection_meta`).
    pub meta: Option<Raw>,
    /// The expiry is extended by the refresh proxy, not by the client.
    pub server_refresh: bool,
}

/// Authenticates a connection without a token through the connect proxy.
pub async fn connect(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    req: &ConnectRequest,
    client: &str,
) -> Result<Identity, Fail> {
    let body = types::ConnectRequest {
        who: who(client, None, None),
        name: &req.name,
        version: &req.version,
        data: req.data.as_deref(),
    };
    let r: types::ConnectResult = ask(node, conn, ep, &body).await?;
    let mut channels = r.channels;
    for ch in r.subs.into_keys() {
        if !channels.contains(&ch) {
            channels.push(ch);
        }
    }
    Ok(Identity {
        user: r.user,
        expires_at: r.expire_at,
        info: r.info,
        channels,
        data: r.data,
        meta: r.meta,
        server_refresh: node.proxy.refresh().is_some(),
    })
}

/// An `rpc` through its method's proxy: the backend's `data` for the reply.
pub async fn rpc(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    method: &str,
    data: Option<&RawValue>,
) -> Result<types::RpcResult, Fail> {
    let (client, user, meta) = identity(conn, ep);
    let body = types::RpcRequest {
        who: who(&client, Some(&user), meta.as_deref()),
        method,
        data,
    };
    ask(node, conn, ep, &body).await
}

/// Asks a channel hook's proxy about `channel`.
async fn channel_call<Res: DeserializeOwned>(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    channel: &str,
    data: Option<&RawValue>,
) -> Result<Res, Fail> {
    let (client, user, meta) = identity(conn, ep);
    let body = types::ChannelRequest {
        who: who(&client, Some(&user), meta.as_deref()),
        channel,
        data,
    };
    ask(node, conn, ep, &body).await
}

/// The endpoint of a channel hook that the namespace turned on.
pub fn channel_endpoint<'a>(node: &'a Node, hook: ChannelHook, name: &str) -> &'a Endpoint {
    node.proxy
        .channel(hook, name)
        .expect("validated: a channel proxy that is on has an endpoint")
}

/// A subscription decided by the subscribe proxy.
pub async fn subscribe(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    channel: &str,
    data: Option<&RawValue>,
) -> Result<types::SubscribeResult, Fail> {
    channel_call(node, conn, ep, channel, data).await
}

/// Applies a subscribe result's `override` to this subscription's options.
pub fn apply_override(opts: &mut crate::config::ChannelOptions, o: &types::Override) {
    for (set, to) in [
        (&mut opts.presence, o.presence),
        (&mut opts.join_leave, o.join_leave),
        (&mut opts.force_push_join_leave, o.force_push_join_leave),
        (&mut opts.force_recovery, o.force_recovery),
        (&mut opts.force_positioning, o.force_positioning),
    ] {
        if let Some(v) = to {
            *set = v.value;
        }
    }
}

/// A client publication checked (and maybe rewritten) by the publish proxy.
pub async fn publish(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    channel: &str,
    data: &RawValue,
) -> Result<types::PublishResult, Fail> {
    channel_call(node, conn, ep, channel, Some(data)).await
}

/// Sleeps until unix second `at`.
async fn sleep_until_unix(at: u64) {
    let now = unix_now();
    if at > now {
        tokio::time::sleep(Duration::from_secs(at - now)).await;
    }
}

/// What a refresh call decided.
enum Refreshed {
    /// End it (expired, or an expiry in the past).
    Expired,
    /// Never expires again.
    Forever,
    /// Expires at this unix second (a retry time after a failure).
    Until(u64, Option<Raw>),
}

fn refreshed(res: Result<Verdict<types::RefreshResult>, crate::proxy::ProxyError>) -> Refreshed {
    match res {
        Ok(Verdict::Result(r)) if r.expired => Refreshed::Expired,
        Ok(Verdict::Result(r)) if r.expire_at == 0 => Refreshed::Forever,
        Ok(Verdict::Result(r)) if r.expire_at <= unix_now() => Refreshed::Expired,
        Ok(Verdict::Result(r)) => Refreshed::Until(r.expire_at, r.info),
        // Errors and disconnects do not apply to refreshes (as in Centrifugo): like a failure,
        // the connection gets more time and the backend is asked again.
        _ => Refreshed::Until(unix_now() + REFRESH_RETRY.as_secs(), None),
    }
}

/// Keeps a connection (`channel` None) or a subscription whose expiry a proxy manages alive:
/// at each expiry, asks the backend; `expired` (or an expiry in the past) closes the
/// connection with 3005 (3006 for a subscription). A subscription's loop ends when the
/// connection leaves the channel.
async fn refresh_loop(
    node: &Node,
    conn: &Conn,
    ep: &Endpoint,
    channel: Option<&str>,
    mut expires_at: u64,
) {
    loop {
        sleep_until_unix(expires_at).await;
        let left = channel.is_some_and(|ch| !conn.state.lock().subs.contains_key(ch));
        if conn.out.is_closing() || left {
            return;
        }
        let (client, user, meta) = identity(conn, ep);
        let who = who(&client, Some(&user), meta.as_deref());
        let res = match channel {
            None => {
                let body = types::RefreshRequest { who };
                node.proxy.call(ep, &conn.headers, &body).await
            }
            Some(channel) => {
                let body = types::ChannelRequest {
                    who,
                    channel,
                    data: None,
                };
                node.proxy.call(ep, &conn.headers, &body).await
            }
        };
        match refreshed(res) {
            Refreshed::Expired => {
                conn.out.close(match channel {
                    None => codes::CONNECTION_EXPIRED,
                    Some(_) => codes::SUBSCRIPTION_EXPIRED,
                });
                return;
            }
            Refreshed::Forever => return,
            Refreshed::Until(at, info) => {
                expires_at = at;
                let Some(info) = info else { continue };
                let mut st = conn.state.lock();
                match channel {
                    None => st.conn_info = Some(info),
                    Some(ch) => {
                        if let Some(s) = st.subs.get_mut(ch) {
                            s.chan_info = Some(info);
                        }
                    }
                }
            }
        }
    }
}

/// The refresh timer of a connection whose expiry the refresh proxy manages.
pub fn spawn_refresh(
    node: Arc<Node>,
    conn: Arc<Conn>,
    expires_at: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(ep) = node.proxy.refresh() {
            refresh_loop(&node, &conn, ep, None, expires_at).await;
        }
    })
}

/// The refresh timer of a subscription whose expiry the sub_refresh proxy manages.
pub fn spawn_sub_refresh(
    node: Arc<Node>,
    conn: Arc<Conn>,
    channel: String,
    proxy_name: String,
    expires_at: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ep = channel_endpoint(&node, ChannelHook::SubRefresh, &proxy_name);
        refresh_loop(&node, &conn, ep, Some(&channel), expires_at).await;
    })
}
