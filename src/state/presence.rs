//! Presence: who is subscribed to a channel, on which node. Changed by the `Join`, `Leave`,
//! `NodeUp` and `NodeDown` ops; read as a list or as counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Event, OpResult, StateMachine};
use crate::protocol::{ClientInfo, PresenceStatsResult};

/// A presence record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Who.
    pub info: ClientInfo,
    /// Node holding the connection.
    pub node: u64,
    /// That node's incarnation (process start) when the client joined.
    pub incarnation: u64,
    /// The channel announces leaves.
    pub join_leave: bool,
}

impl StateMachine {
    /// `Op::Join`: records presence when asked; returns the join push when the channel
    /// announces joins.
    pub(super) fn apply_join(
        &mut self,
        channel: &str,
        info: &ClientInfo,
        node: u64,
        incarnation: u64,
        presence: bool,
        join_leave: bool,
    ) -> Option<Event> {
        if presence {
            self.presence
                .entry(channel.to_string())
                .or_default()
                .insert(
                    info.client.clone(),
                    PresenceEntry {
                        info: info.clone(),
                        node,
                        incarnation,
                        join_leave,
                    },
                );
        }
        join_leave.then(|| Event::Join {
            channel: channel.to_string(),
            info: info.clone(),
        })
    }

    /// `Op::Leave`: removes presence when asked; returns the leave push when the channel
    /// announces leaves.
    pub(super) fn apply_leave(
        &mut self,
        channel: &str,
        info: &ClientInfo,
        presence: bool,
        join_leave: bool,
    ) -> Option<Event> {
        if presence && let Some(m) = self.presence.get_mut(channel) {
            m.remove(&info.client);
            if m.is_empty() {
                self.presence.remove(channel);
            }
        }
        join_leave.then(|| Event::Leave {
            channel: channel.to_string(),
            info: info.clone(),
        })
    }

    /// `Op::NodeUp`: clears the presence of the node's earlier incarnations.
    pub(super) fn apply_node_up(
        &mut self,
        node: u64,
        incarnation: u64,
        events: &mut Vec<Event>,
    ) -> OpResult {
        self.clear_presence(|e| e.node == node && e.incarnation < incarnation, events);
        OpResult::Done
    }

    /// `Op::NodeDown`: clears all the node's presence, then tells local subscribers.
    pub(super) fn apply_node_down(&mut self, node: u64, events: &mut Vec<Event>) -> OpResult {
        self.clear_presence(|e| e.node == node, events);
        events.push(Event::NodeDown { node });
        OpResult::Done
    }

    /// Removes the presence entries matching `gone`, emitting leaves where announced. Channels
    /// are visited in name order so events come out in the same order on every node.
    fn clear_presence(&mut self, gone: impl Fn(&PresenceEntry) -> bool, events: &mut Vec<Event>) {
        let mut channels: Vec<String> = self.presence.keys().cloned().collect();
        channels.sort();
        for ch in channels {
            let m = self.presence.get_mut(&ch).expect("listed");
            let mut clients: Vec<String> = m
                .iter()
                .filter(|(_, e)| gone(e))
                .map(|(c, _)| c.clone())
                .collect();
            clients.sort();
            for c in clients {
                if let Some(e) = m.remove(&c)
                    && e.join_leave
                {
                    events.push(Event::Leave {
                        channel: ch.clone(),
                        info: e.info,
                    });
                }
            }
            if m.is_empty() {
                self.presence.remove(&ch);
            }
        }
    }

    /// Presence of a channel: client id → info.
    pub fn presence(&self, channel: &str) -> BTreeMap<String, ClientInfo> {
        self.presence
            .get(channel)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.info.clone())).collect())
            .unwrap_or_default()
    }

    /// Every presence entry recorded for clients of `node`: (channel, entry).
    pub fn presence_of_node(&self, node: u64) -> Vec<(String, PresenceEntry)> {
        self.presence
            .iter()
            .flat_map(|(ch, m)| {
                m.values()
                    .filter(|e| e.node == node)
                    .map(|e| (ch.clone(), e.clone()))
            })
            .collect()
    }

    /// Presence counts of a channel.
    pub fn presence_stats(&self, channel: &str) -> PresenceStatsResult {
        let Some(m) = self.presence.get(channel) else {
            return PresenceStatsResult::default();
        };
        let users: std::collections::HashSet<&str> =
            m.values().map(|e| e.info.user.as_str()).collect();
        PresenceStatsResult {
            num_clients: m.len() as u32,
            num_users: users.len() as u32,
        }
    }
}
