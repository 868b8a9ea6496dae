//! Channel names: `[$][namespace:]name[#user1,user2]`. Resolves a name to its namespace's
//! options and answers the name-based permission questions (private, user-limited).

use std::collections::HashMap;

use crate::config::{ChannelConfig, ChannelOptions};
use crate::protocol::{ErrorCode, codes};

/// Prefix of channels that need a subscription token.
pub const PRIVATE_PREFIX: char = '$';
/// Separates the namespace from the rest of the name.
pub const NAMESPACE_BOUNDARY: char = ':';
/// Starts the list of users allowed on a user-limited channel.
pub const USER_BOUNDARY: char = '#';
/// Separates users in that list.
pub const USER_SEPARATOR: char = ',';

/// The configured namespaces, ready for lookups.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Options of channels without a namespace.
    default: ChannelOptions,
    /// Namespace name → options.
    namespaces: HashMap<String, ChannelOptions>,
    /// Longest accepted channel name, in bytes.
    max_length: usize,
}

impl Channels {
    /// Builds the lookup table from the config.
    pub fn new(cfg: &ChannelConfig, max_length: usize) -> Channels {
        Channels {
            default: cfg.options.clone(),
            namespaces: cfg
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.options.clone()))
                .collect(),
            max_length,
        }
    }

    /// The options of `channel`: 107 for an empty or too long name (or one with a control
    /// character), 102 for an unknown namespace.
    pub fn resolve(&self, channel: &str) -> Result<&ChannelOptions, ErrorCode> {
        if channel.len() > self.max_length {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "channel_max_length")
                .increment(1);
            return Err(codes::BAD_REQUEST);
        }
        if channel.is_empty() || channel.chars().any(char::is_control) {
            return Err(codes::BAD_REQUEST);
        }
        let name = channel.strip_prefix(PRIVATE_PREFIX).unwrap_or(channel);
        match name.split_once(NAMESPACE_BOUNDARY) {
            Some((ns, _)) => self.namespaces.get(ns).ok_or(codes::UNKNOWN_CHANNEL),
            None => Ok(&self.default),
        }
    }
}

/// `$…` channels need a subscription token.
pub fn is_private(channel: &str) -> bool {
    channel.starts_with(PRIVATE_PREFIX)
}

/// Whether `user` is listed after `#` in a user-limited channel name (`dialog#42,43`).
/// `None` when the channel is not user-limited.
pub fn user_limited_allows(channel: &str, user: &str) -> Option<bool> {
    let (_, users) = channel.rsplit_once(USER_BOUNDARY)?;
    Some(!user.is_empty() && users.split(USER_SEPARATOR).any(|u| u == user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Namespace;

    fn channels() -> Channels {
        let cfg = ChannelConfig {
            options: ChannelOptions::default(),
            namespaces: vec![Namespace {
                name: "chat".into(),
                options: ChannelOptions {
                    presence: true,
                    ..Default::default()
                },
            }],
        };
        Channels::new(&cfg, 20)
    }

    #[test]
    fn resolves_namespaces_including_private_ones() {
        let c = channels();
        assert!(!c.resolve("news").unwrap().presence);
        assert!(c.resolve("chat:room").unwrap().presence);
        assert!(c.resolve("$chat:room").unwrap().presence);
        assert_eq!(c.resolve("nope:room").unwrap_err(), codes::UNKNOWN_CHANNEL);
        assert_eq!(c.resolve("").unwrap_err(), codes::BAD_REQUEST);
        assert_eq!(c.resolve(&"x".repeat(21)).unwrap_err(), codes::BAD_REQUEST);
        assert_eq!(c.resolve("a\nb").unwrap_err(), codes::BAD_REQUEST);
    }

    #[test]
    fn user_limited_channels() {
        assert_eq!(user_limited_allows("dialog#42,43", "43"), Some(true));
        assert_eq!(user_limited_allows("dialog#42,43", "4"), Some(false));
        assert_eq!(user_limited_allows("dialog#42,43", ""), Some(false));
        assert_eq!(user_limited_allows("dialog", "42"), None);
        assert!(is_private("$secret") && !is_private("secret"));
    }
}
