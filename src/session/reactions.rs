//! Reactions to committed events that are not deliveries: user actions replicated by the API
//! (disconnect, refresh, server-side subscribe and unsubscribe) carried out on this node's connections,
//! and re-announcing presence when this node was declared down while alive. Installed as the
//! engine's hook by [`install`]; called while the engine applies, so anything that proposes in
//! turn runs in its own task.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::subscribe::{server_subscribe, server_unsubscribe};
use crate::node::Node;
use crate::protocol::codes;
use crate::state::{Event, UserAction};

/// Makes this module the engine's hook for `node`'s committed events. The hook holds the node
/// weakly: the engine is owned by the node.
pub fn install(node: &Arc<Node>) {
    let weak = Arc::downgrade(node);
    node.engine.set_event_sink(Arc::new(move |event| {
        if let Some(node) = weak.upgrade() {
            on_event(&node, event);
        }
    }));
}

/// Reacts to one committed event.
fn on_event(node: &Arc<Node>, event: &Event) {
    match event {
        Event::User { action, .. } => user_action(node, action),
        Event::NodeDown { node: id } if *id == node.cfg.node.id => reannounce(node),
        _ => {}
    }
}

/// This node was declared down while alive (e.g. cut off for longer than the lease): the
/// presence reconciliation records its clients again at once (`presence_sync`).
fn reannounce(node: &Arc<Node>) {
    tracing::warn!("this node was declared down while alive: re-announcing its presence");
    node.presence_lost.notify_one();
}

/// Carries out a committed user action on this node's connections.
fn user_action(node: &Arc<Node>, action: &UserAction) {
    match action.clone() {
        UserAction::Disconnect {
            user,
            client,
            code,
            reason,
        } => {
            for conn in node.conns_of(&user, client.as_deref()) {
                conn.out.close_with(code, &reason);
            }
        }
        UserAction::Refresh {
            user,
            client,
            expired,
            expire_at,
        } => {
            for conn in node.conns_of(&user, client.as_deref()) {
                if expired {
                    conn.out.close(codes::CONNECTION_EXPIRED);
                } else if let Some(at) = expire_at {
                    conn.expires_at.store(at, Ordering::Relaxed);
                    // Wake the writer so it re-arms its expiry timer.
                    let _ = conn.out.push(conn.out.encoding().ping());
                }
            }
        }
        UserAction::Subscribe {
            user,
            client,
            channel,
        } => {
            let conns = node.conns_of(&user, client.as_deref());
            let Ok(opts) = node.channels.resolve(&channel).cloned() else {
                return;
            };
            if conns.is_empty() {
                return;
            }
            let node = node.clone();
            tokio::spawn(async move {
                for conn in conns {
                    if let Err(e) = server_subscribe(&node, &conn, &channel, &opts).await {
                        tracing::info!(user = %user, channel = %channel, code = e.code, "server-side subscribe refused");
                    }
                }
            });
        }
        UserAction::Unsubscribe {
            user,
            client,
            channel,
        } => {
            let conns = node.conns_of(&user, client.as_deref());
            if conns.is_empty() {
                return;
            }
            let node = node.clone();
            tokio::spawn(async move {
                for conn in conns {
                    server_unsubscribe(&node, &conn, &channel).await;
                }
            });
        }
    }
}
