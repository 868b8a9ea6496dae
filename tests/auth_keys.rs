//! Tokens signed with RSA and ECDSA keys (public keys from PEM files), and aud/iss checks,
//! over a real connection. Keys are made by the openssl CLI for each run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

#[tokio::test]
async fn rsa_and_ecdsa_tokens_from_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"],
    );
    let toml = base_toml().replace(
        "[auth]",
        &format!(
            "[auth]\ntoken_rsa_public_key = \"{}\"\ntoken_ecdsa_public_key = \"{}\"",
            d.join("rsa.pub.pem").display(),
            d.join("ec.pub.pem").display()
        ),
    );
    let s = TestServer::start_toml(&toml).await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(d.join("rsa.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(d.join("ec.pem")).unwrap()).unwrap();
    let exp = switchyard::auth::unix_now() + 600;
    for (alg, key) in [
        (Algorithm::RS256, &rsa),
        (Algorithm::RS512, &rsa),
        (Algorithm::ES256, &ec),
    ] {
        let mut c = Client::open(&s.ws_url()).await;
        let r = c
            .connect(&sign(alg, key, json!({"sub": "alice", "exp": exp})))
            .await;
        assert!(r["connect"]["client"].is_string(), "{alg:?}: {r}");
        // A subscription token signed with the same family works too.
        let st = sign(
            alg,
            key,
            json!({"sub": "alice", "channel": "$chat:k", "exp": exp}),
        );
        let r = c
            .call("subscribe", json!({"channel": "$chat:k", "token": st}))
            .await;
        assert!(r.get("subscribe").is_some(), "{alg:?}: {r}");
    }
    // A token whose header claims RS256 but is signed by another RSA key is refused.
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "other.pem",
        ],
    );
    let other = EncodingKey::from_rsa_pem(&std::fs::read(d.join("other.pem")).unwrap()).unwrap();
    let mut c = Client::open(&s.ws_url()).await;
    c.send(json!({"id": 1, "connect": {"token": sign(Algorithm::RS256, &other, json!({"sub": "a", "exp": exp}))}}))
        .await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));
}

#[tokio::test]
async fn audience_and_issuer_are_enforced_when_configured() {
    let toml = base_toml().replace(
        "[auth]",
        "[auth]\ntoken_audience = \"switchyard\"\ntoken_issuer = \"https://auth.test\"",
    );
    let s = TestServer::start_toml(&toml).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let exp = switchyard::auth::unix_now() + 600;
    let good = sign(
        Algorithm::HS384,
        &key,
        json!({"sub": "a", "exp": exp, "aud": "switchyard", "iss": "https://auth.test"}),
    );
    let mut c = Client::open(&s.ws_url()).await;
    assert!(c.connect(&good).await["connect"].is_object());
    for claims in [
        json!({"sub": "a", "exp": exp}),
        json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://auth.test"}),
        json!({"sub": "a", "exp": exp, "aud": "switchyard", "iss": "https://evil.test"}),
    ] {
        let mut c = Client::open(&s.ws_url()).await;
        c.send(
            json!({"id": 1, "connect": {"token": sign(Algorithm::HS256, &key, claims.clone())}}),
        )
        .await;
        assert_eq!(
            c.closed().await,
            Closed::Code(3500, "invalid token".into()),
            "{claims}"
        );
    }
    // nbf in the future (beyond leeway) is refused too.
    let mut c = Client::open(&s.ws_url()).await;
    let early = sign(
        Algorithm::HS256,
        &key,
        json!({"sub": "a", "exp": exp, "nbf": exp, "aud": "switchyard", "iss": "https://auth.test"}),
    );
    c.send(json!({"id": 1, "connect": {"token": early}})).await;
    assert_eq!(c.closed().await, Closed::Code(3500, "invalid token".into()));
}
