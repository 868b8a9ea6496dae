//! JWT verification of connection and subscription tokens, and minting of test tokens.
//!
//! HS256/384/512 use `auth.token_hmac_secret`; RS256/384/512 and PS* the RSA public key file;
//! ES256/384 the ECDSA public key file. The algorithm in the token header selects the key; a
//! family without a configured key is refused.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::protocol::Raw;

/// Claims of a connection token.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConnectionClaims {
    /// User id; "" is anonymous.
    #[serde(default)]
    pub sub: String,
    /// Expiry (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Connection expiry overriding `exp` (0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<u64>,
    /// Becomes `conn_info` in ClientInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Raw>,
    /// Server-side subscriptions made at connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Server-side subscriptions with options (only the keys are used).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, serde_json::Value>,
    /// Opaque metadata, never sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Raw>,
    /// Present only in subscription tokens; a connection token carrying it is refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// Claims of a subscription token.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SubscriptionClaims {
    /// Must equal the connection's user.
    #[serde(default)]
    pub sub: String,
    /// Must equal the channel subscribed to.
    #[serde(default)]
    pub channel: String,
    /// When set, binds the token to one client id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Expiry (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Subscription expiry overriding `exp` (0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<u64>,
    /// Becomes `chan_info` in ClientInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Raw>,
    /// Returned in the subscribe reply's `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

impl ConnectionClaims {
    /// When the connection must be refreshed (unix seconds), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        effective_expiry(self.exp, self.expire_at)
    }
}

impl SubscriptionClaims {
    /// When the subscription must be refreshed (unix seconds), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        effective_expiry(self.exp, self.expire_at)
    }
}

fn effective_expiry(exp: Option<u64>, expire_at: Option<u64>) -> Option<u64> {
    match expire_at {
        Some(0) => None,
        Some(t) => Some(t),
        None => exp,
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Signature fine, but `exp` has passed: the client should fetch a new token (109).
    #[error("token expired")]
    Expired,
    /// Anything else: bad signature, wrong algorithm, malformed, wrong audience… (3500 for a
    /// connection token; error 103 for a subscription token).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid subscription token for another user, client or channel: it invalidates the
    /// connection (3500).
    #[error("token mismatch: {0}")]
    Mismatch(String),
}

/// Key material and rules for verifying tokens.
pub struct Verifier {
    /// HMAC key, when a secret is configured.
    hmac: Option<DecodingKey>,
    /// RSA public key.
    rsa: Option<DecodingKey>,
    /// ECDSA public key.
    ec: Option<DecodingKey>,
    /// Rules shared by every verification (algorithms set per call).
    base: Validation,
}

impl Verifier {
    /// Loads the keys named in the config.
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Verifier> {
        let hmac = (!cfg.token_hmac_secret.is_empty())
            .then(|| DecodingKey::from_secret(cfg.token_hmac_secret.as_bytes()));
        let rsa =
            match &cfg.token_rsa_public_key {
                Some(p) => Some(DecodingKey::from_rsa_pem(&std::fs::read(p)?).map_err(|e| {
                    anyhow::anyhow!("auth.token_rsa_public_key {}: {e}", p.display())
                })?),
                None => None,
            };
        let ec = match &cfg.token_ecdsa_public_key {
            Some(p) => Some(DecodingKey::from_ec_pem(&std::fs::read(p)?).map_err(|e| {
                anyhow::anyhow!("auth.token_ecdsa_public_key {}: {e}", p.display())
            })?),
            None => None,
        };
        let mut base = Validation::new(Algorithm::HS256);
        base.leeway = cfg.token_leeway.as_secs();
        base.validate_nbf = true;
        base.validate_exp = true;
        let mut required: Vec<&str> = Vec::new();
        if cfg.token_audience.is_empty() {
            base.validate_aud = false;
        } else {
            base.set_audience(&[&cfg.token_audience]);
            required.push("aud");
        }
        if !cfg.token_issuer.is_empty() {
            base.set_issuer(&[&cfg.token_issuer]);
            required.push("iss");
        }
        // `exp` is optional (tokens without it never expire), but checked whenever present.
        base.set_required_spec_claims(&required);
        Ok(Verifier {
            hmac,
            rsa,
            ec,
            base,
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        use Algorithm::*;
        let key = match header.alg {
            HS256 | HS384 | HS512 => self.hmac.as_ref(),
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => self.rsa.as_ref(),
            ES256 | ES384 => self.ec.as_ref(),
            _ => None,
        }
        .ok_or_else(|| TokenError::Invalid(format!("no key configured for {:?}", header.alg)))?;
        let mut v = self.base.clone();
        v.algorithms = vec![header.alg];
        jsonwebtoken::decode::<T>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    /// Verifies a connection token.
    pub fn connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        let c: ConnectionClaims = self.decode(token)?;
        if !c.channel.is_empty() {
            return Err(TokenError::Invalid(
                "a subscription token cannot be used to connect".into(),
            ));
        }
        if let Some(t) = c.expire_at
            && t != 0
            && t <= unix_now()
        {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }

    /// Verifies a subscription token for `channel`, held by `user` on connection `client`.
    pub fn subscription(
        &self,
        token: &str,
        user: &str,
        client: &str,
        channel: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let c: SubscriptionClaims = self.decode(token)?;
        if c.channel != channel {
            return Err(TokenError::Mismatch("token is for another channel".into()));
        }
        if c.sub != user {
            return Err(TokenError::Mismatch("token is for another user".into()));
        }
        if !c.client.is_empty() && c.client != client {
            return Err(TokenError::Mismatch("token is for another client".into()));
        }
        if let Some(t) = c.expire_at
            && t != 0
            && t <= unix_now()
        {
            return Err(TokenError::Expired);
        }
        Ok(c)
    }
}

/// Seconds a client has until `expires_at` (unix seconds), at least 1: a client told
/// `expires: true` always gets a positive `ttl` to schedule its refresh with.
pub fn ttl_until(expires_at: u64) -> u32 {
    expires_at
        .saturating_sub(unix_now())
        .clamp(1, u32::MAX as u64) as u32
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `switchyard token` signs.
#[derive(Debug, Default)]
pub struct MintRequest {
    /// `sub`.
    pub user: String,
    /// Lifetime; `None` = no `exp`.
    pub ttl: Option<Duration>,
    /// Mint a subscription token for this channel instead of a connection token.
    pub channel: Option<String>,
    /// Connection tokens: server-side subscriptions (the `channels` claim).
    pub channels: Vec<String>,
    /// `info` claim (raw JSON).
    pub info: Option<Raw>,
}

/// Signs a token with HS256 and `secret`.
pub fn mint(secret: &str, req: MintRequest) -> anyhow::Result<String> {
    anyhow::ensure!(
        !secret.is_empty(),
        "auth.token_hmac_secret is empty: set it in the config or SWITCHYARD_AUTH__TOKEN_HMAC_SECRET"
    );
    let now = unix_now();
    let exp = req.ttl.map(|t| now + t.as_secs());
    let key = EncodingKey::from_secret(secret.as_bytes());
    let header = Header::new(Algorithm::HS256);
    let token = match req.channel {
        Some(channel) => jsonwebtoken::encode(
            &header,
            &SubscriptionClaims {
                sub: req.user,
                channel,
                exp,
                info: req.info,
                ..Default::default()
            },
            &key,
        )?,
        None => jsonwebtoken::encode(
            &header,
            &ConnectionClaims {
                sub: req.user,
                exp,
                iat: Some(now),
                info: req.info,
                channels: req.channels,
                ..Default::default()
            },
            &key,
        )?,
    };
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(&AuthConfig {
            token_hmac_secret: "s3cret".into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn round_trip_connection_token() {
        let t = mint(
            "s3cret",
            MintRequest {
                user: "alice".into(),
                ttl: Some(Duration::from_secs(60)),
                info: Some(serde_json::value::RawValue::from_string("{\"n\":1}".into()).unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        let c = verifier().connection(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.info.unwrap().get(), "{\"n\":1}");
        assert!(c.exp.unwrap() > unix_now());
    }

    #[test]
    fn tampered_wrong_key_and_expired_tokens_are_refused() {
        let t = mint(
            "s3cret",
            MintRequest {
                user: "a".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(matches!(
            verifier().connection(&parts.join(".")),
            Err(TokenError::Invalid(_))
        ));
        let other = mint(
            "other",
            MintRequest {
                user: "a".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(
            verifier().connection(&other),
            Err(TokenError::Invalid(_))
        ));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &ConnectionClaims {
                sub: "a".into(),
                exp: Some(unix_now() - 3600),
                ..Default::default()
            },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(
            verifier().connection(&expired).unwrap_err(),
            TokenError::Expired
        );
        assert!(matches!(
            verifier().connection("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn subscription_token_binds_user_and_channel() {
        let t = mint(
            "s3cret",
            MintRequest {
                user: "bob".into(),
                channel: Some("$priv".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(verifier().subscription(&t, "bob", "c1", "$priv").is_ok());
        assert!(verifier().subscription(&t, "eve", "c1", "$priv").is_err());
        assert!(verifier().subscription(&t, "bob", "c1", "$other").is_err());
        assert!(
            verifier().connection(&t).is_err(),
            "subscription token used to connect"
        );
    }

    #[test]
    fn algorithm_without_key_is_refused() {
        let v = Verifier::new(&AuthConfig::default()).unwrap();
        let t = mint(
            "s3cret",
            MintRequest {
                user: "a".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(v.connection(&t), Err(TokenError::Invalid(_))));
    }
}
