//! The one place that decides what of a run's arguments a report may show. Every report
//! writer (the JSON document, the HTML page) shows the arguments through [`args`], and
//! [`url`] is how a URL appears in a message: the run itself still uses the real values.

use serde_json::Value;

/// What a secret is shown as.
pub const MARK: &str = "[redacted]";

/// Whether an argument named `name` (its serde name, `api_key`, `token_secret`, …) holds a
/// secret: the API key, the token secret, a ready token, and anything named like one.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "token"
        || n.ends_with("_token")
        || n.ends_with("secret")
        || n.ends_with("key")
        || n.contains("password")
}

/// `v` (a run's arguments as JSON) with every secret replaced by [`MARK`]: the values of
/// secret-named fields at any depth, whatever their type (`null`, an absent secret, stays
/// `null`), and the credentials inside any string that is a URL (see [`url`]).
pub fn args(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let shown = if is_secret(k) && !v.is_null() {
                        Value::String(MARK.into())
                    } else {
                        args(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(args).collect()),
        Value::String(s) if s.contains("://") => Value::String(url(s)),
        other => other.clone(),
    }
}

/// `u` with its credentials replaced by [`MARK`]: the user information before `@`
/// (`ws://user:pass@host` → `ws://[redacted]@host`) and the value of every query parameter
/// (`?token=abc&x=1` → `?token=[redacted]&x=[redacted]`); the scheme, host, port, path and
/// parameter names stay, so the URL is still recognisable.
pub fn url(u: &str) -> String {
    let (scheme, rest) = match u.find("://") {
        Some(i) => u.split_at(i + 3),
        None => ("", u),
    };
    let (before_query, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let authority = match authority.rfind('@') {
        Some(i) => format!("{MARK}{}", &authority[i..]),
        None => authority.to_string(),
    };
    let mut out = format!("{scheme}{authority}{path}");
    if let Some(q) = query {
        let (q, fragment) = match q.find('#') {
            Some(i) => (&q[..i], &q[i..]),
            None => (q, ""),
        };
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((name, _)) => format!("{name}={MARK}"),
                None if p.is_empty() => String::new(),
                None => MARK.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_fields_are_redacted_at_any_depth_and_the_rest_kept() {
        let v = json!({
            "target": {
                "urls": ["ws://127.0.0.1:8000/connection/websocket"],
                "apis": ["http://127.0.0.1:8000"],
                "api_key": "the-api-key",
                "token_secret": "the-secret",
                "token": null,
                "channel": "chat:bench",
                "concurrency": 512,
            },
            "fanout": {"target": {"token": "a.b.c", "api_key": null}},
            "rate": 100.0,
        });
        let shown = args(&v);
        let text = shown.to_string();
        for secret in ["the-api-key", "the-secret", "a.b.c"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(shown["target"]["api_key"], MARK);
        assert_eq!(shown["target"]["token_secret"], MARK);
        assert_eq!(shown["fanout"]["target"]["token"], MARK);
        // An absent secret stays absent; everything else is as it was.
        assert_eq!(shown["target"]["token"], Value::Null);
        assert_eq!(shown["fanout"]["target"]["api_key"], Value::Null);
        assert_eq!(shown["target"]["urls"], v["target"]["urls"]);
        assert_eq!(shown["target"]["channel"], "chat:bench");
        assert_eq!(shown["target"]["concurrency"], 512);
        assert_eq!(shown["rate"], 100.0);
        // Redacting twice changes nothing.
        assert_eq!(args(&shown), shown);
    }

    #[test]
    fn secret_names() {
        for n in [
            "api_key",
            "token_secret",
            "token",
            "admin_token",
            "Password",
        ] {
            assert!(is_secret(n), "{n}");
        }
        for n in [
            "urls",
            "apis",
            "channel",
            "tokens_per_second",
            "json",
            "keyspace",
        ] {
            assert!(!is_secret(n), "{n}");
        }
    }

    #[test]
    fn urls_lose_their_credentials_and_keep_their_shape() {
        let cases = [
            (
                "ws://127.0.0.1:8000/connection/websocket",
                "ws://127.0.0.1:8000/connection/websocket",
            ),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            (
                "ws://127.0.0.1:8000/connection/websocket?token=abc.def&format=json",
                "ws://127.0.0.1:8000/connection/websocket?token=[redacted]&format=[redacted]",
            ),
            (
                "http://bench:hunter2@localhost:8001/metrics",
                "http://[redacted]@localhost:8001/metrics",
            ),
            ("http://h:1?secret#frag", "http://h:1?[redacted]#frag"),
            ("http://h:1/p?", "http://h:1/p?"),
        ];
        for (given, shown) in cases {
            assert_eq!(url(given), shown, "{given}");
        }
        let v = args(&json!({"admins": ["http://u:pw@127.0.0.1:8001?k=v"]}));
        assert_eq!(
            v["admins"][0],
            "http://[redacted]@127.0.0.1:8001?k=[redacted]"
        );
    }
}
