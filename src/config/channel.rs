//! `[channel]`: the options of channels without a namespace, the namespaces, and the check that
//! refuses unknown keys in them.

use std::collections::BTreeSet;
use std::time::Duration;

use figment::Figment;
use serde::{Deserialize, Serialize};

use super::{ConfigError, duration_str};

/// Options that apply to a channel, set for channels without a namespace in `[channel]` and per
/// namespace in `[[channel.namespaces]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChannelOptions {
    /// Publications kept per channel (0 = no history, no recovery).
    pub history_size: usize,
    /// How long publications stay in history (0 = no history).
    #[serde(with = "duration_str")]
    pub history_ttl: Duration,
    /// Keep presence (who is subscribed).
    pub presence: bool,
    /// Send join/leave pushes to subscribers that ask for them.
    pub join_leave: bool,
    /// With `join_leave`: push joins and leaves to every subscriber, asked or not.
    pub force_push_join_leave: bool,
    /// Make every subscription recoverable, whatever the client asked.
    pub force_recovery: bool,
    /// Make every subscription positioned, whatever the client asked.
    pub force_positioning: bool,
    /// Any connected client may subscribe without a subscription token (not to `$` channels).
    pub allow_subscribe_for_client: bool,
    /// Subscribers may publish from the client.
    pub allow_publish_for_subscriber: bool,
    /// Any connected client may publish from the client.
    pub allow_publish_for_client: bool,
    /// Subscribers may ask for presence.
    pub allow_presence_for_subscriber: bool,
    /// Any connected client may ask for presence.
    pub allow_presence_for_client: bool,
    /// Subscribers may ask for history.
    pub allow_history_for_subscriber: bool,
    /// Any connected client may ask for history.
    pub allow_history_for_client: bool,
    /// `name#u1,u2` channels may be subscribed by the users listed after `#`.
    pub allow_user_limited_channels: bool,
    /// Subscriptions without a token are decided by the subscribe proxy (not `$` and `#`
    /// channels, which keep their own rules).
    pub subscribe_proxy: bool,
    /// The `[proxy.named.<name>]` proxy subscriptions go to; empty: `[proxy.subscribe]`.
    pub subscribe_proxy_name: String,
    /// Client publications are validated (and may be rewritten) by the publish proxy before
    /// they are committed; it replaces the `allow_publish_*` checks.
    pub publish_proxy: bool,
    /// The `[proxy.named.<name>]` proxy publications go to; empty: `[proxy.publish]`.
    pub publish_proxy_name: String,
    /// Expiring subscriptions are extended (or ended) by the sub_refresh proxy.
    pub sub_refresh_proxy: bool,
    /// The `[proxy.named.<name>]` proxy sub_refresh calls go to; empty: `[proxy.sub_refresh]`.
    pub sub_refresh_proxy_name: String,
    /// Delta types subscribers may ask for (`delta` in subscribe); only "fossil" exists.
    pub allowed_delta_types: Vec<String>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
            force_push_join_leave: false,
            force_recovery: false,
            force_positioning: false,
            allow_subscribe_for_client: false,
            allow_publish_for_subscriber: false,
            allow_publish_for_client: false,
            allow_presence_for_subscriber: false,
            allow_presence_for_client: false,
            allow_history_for_subscriber: false,
            allow_history_for_client: false,
            allow_user_limited_channels: false,
            subscribe_proxy: false,
            subscribe_proxy_name: String::new(),
            publish_proxy: false,
            publish_proxy_name: String::new(),
            sub_refresh_proxy: false,
            sub_refresh_proxy_name: String::new(),
            allowed_delta_types: Vec::new(),
        }
    }
}

impl ChannelOptions {
    /// History (and so recovery and positioning) is on only with both a size and a TTL.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// `[channel]`: the options of channels without a namespace, plus the namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ChannelConfig {
    /// Options for channels without a `namespace:` prefix.
    #[serde(flatten)]
    pub options: ChannelOptions,
    /// `[[channel.namespaces]]`: `name` plus any channel option.
    pub namespaces: Vec<Namespace>,
}

/// One namespace: channels named `<name>:…` take these options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace name: letters, digits, `_` and `-`.
    pub name: String,
    /// The options of this namespace's channels.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// `ChannelConfig` flattens the options, which serde cannot combine with `deny_unknown_fields`;
/// check the `[channel]` and namespace keys here so that typos are still refused.
pub(super) fn check_channel_keys(fig: &Figment) -> Result<(), ConfigError> {
    let known: BTreeSet<String> = match serde_json::to_value(ChannelOptions::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => unreachable!("ChannelOptions serialises to an object"),
    };
    let Ok(channel) = fig.find_value("channel") else {
        return Ok(());
    };
    let Some(dict) = channel.as_dict() else {
        return Err(ConfigError::Invalid("[channel] must be a table".into()));
    };
    for key in dict.keys() {
        if key != "namespaces" && !known.contains(key) {
            return Err(ConfigError::Invalid(format!("unknown key channel.{key}")));
        }
    }
    if let Some(list) = dict.get("namespaces").and_then(|v| v.as_array()) {
        for ns in list {
            let Some(d) = ns.as_dict() else {
                return Err(ConfigError::Invalid(
                    "[[channel.namespaces]] entries must be tables".into(),
                ));
            };
            let name = d.get("name").and_then(|v| v.as_str()).unwrap_or("?");
            for key in d.keys() {
                if key != "name" && !known.contains(key) {
                    return Err(ConfigError::Invalid(format!(
                        "unknown key {key} in namespace {name:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}
