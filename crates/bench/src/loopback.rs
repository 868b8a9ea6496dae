//! Which addresses the bench may send to. It is a tool for nodes you run on this machine, so
//! every URL it is given (`--url`, `--api`, `--admin`) must resolve to loopback addresses
//! only (127.0.0.0/8, `::1`), unless `--allow-remote` says otherwise. The check runs on the
//! arguments, before any connection is opened.

use std::net::SocketAddr;

use anyhow::{Context, bail};

use super::client::Endpoint;
use super::redact;

/// The flag that lifts the loopback-only rule.
pub const ALLOW_REMOTE: &str = "--allow-remote";

/// Whether `addr` is on this machine's loopback: 127.0.0.0/8 or `::1` (also written as the
/// IPv4-mapped `::ffff:127.x.y.z`).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Checks that `url`, which resolved to `addrs`, may be targeted: every address must be
/// loopback, unless `allow_remote`. The error names the URL (its credentials redacted) and
/// the flag.
pub fn check(url: &str, addrs: &[SocketAddr], allow_remote: bool) -> anyhow::Result<()> {
    let shown = redact::url(url);
    if addrs.is_empty() {
        bail!("{shown}: the host resolves to no address");
    }
    if allow_remote {
        return Ok(());
    }
    if let Some(remote) = addrs.iter().find(|a| !is_loopback(a)) {
        bail!(
            "{shown}: {} is not a loopback address (127.0.0.0/8, ::1); switchyard bench \
             targets only nodes on this machine unless {ALLOW_REMOTE} is given",
            remote.ip()
        );
    }
    Ok(())
}

/// Parses `url`, resolves its host (every address it has) and [`check`]s them.
pub async fn endpoint(url: &str, allow_remote: bool) -> anyhow::Result<Endpoint> {
    let (authority, path) = Endpoint::split(url)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("{}: cannot resolve the host", redact::url(url)))?
        .collect();
    check(url, &addrs, allow_remote)?;
    Ok(Endpoint {
        authority: authority.to_string(),
        addr: addrs[0],
        path: path.trim_end_matches('/').to_string(),
    })
}

/// [`endpoint`] for each of `urls`.
pub async fn endpoints(urls: &[String], allow_remote: bool) -> anyhow::Result<Vec<Endpoint>> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        out.push(endpoint(u, allow_remote).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn loopback_addresses_pass_and_others_need_the_flag() {
        let url = "ws://example:1/connection/websocket";
        for ok in [
            &["127.0.0.1:8000"][..],
            &["127.255.255.254:1"],
            &["[::1]:8000"],
            &["[::ffff:127.0.0.2]:8000"],
            &["127.0.0.1:8000", "[::1]:8000"],
        ] {
            check(url, &addrs(ok), false).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for remote in [
            &["192.0.2.1:1"][..],
            &["10.0.0.1:8000"],
            &["0.0.0.0:8000"],
            &["[2001:db8::1]:8000"],
            &["[::ffff:192.0.2.1]:8000"],
            // Every address must be loopback, not just the first.
            &["127.0.0.1:8000", "192.0.2.1:8000"],
        ] {
            let e = check(url, &addrs(remote), false)
                .expect_err(&format!("{remote:?} refused"))
                .to_string();
            assert!(e.contains(url) && e.contains(ALLOW_REMOTE), "{e}");
            check(url, &addrs(remote), true).unwrap_or_else(|e| panic!("{remote:?}: {e}"));
        }
        assert!(check(url, &[], true).is_err());
    }

    #[test]
    fn the_refusal_names_the_url_without_its_credentials() {
        let url = "ws://192.0.2.1:1/connection/websocket?token=abc.def";
        let e = check(url, &addrs(&["192.0.2.1:1"]), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ws://192.0.2.1:1/connection/websocket?token=[redacted]"),
            "{e}"
        );
        assert!(!e.contains("abc.def"), "{e}");
    }

    #[tokio::test]
    async fn urls_are_resolved_and_checked() {
        for ok in [
            "ws://127.0.0.1:8000/connection/websocket",
            "ws://localhost:8000/connection/websocket",
            "http://[::1]:8000",
            "http://127.0.0.3:8001/",
        ] {
            let ep = endpoint(ok, false)
                .await
                .unwrap_or_else(|e| panic!("{ok}: {e:#}"));
            assert!(is_loopback(&ep.addr), "{ok}: {:?}", ep.addr);
        }
        let ep = endpoint("ws://localhost:8000/connection/websocket", false)
            .await
            .unwrap();
        assert_eq!(
            (ep.authority.as_str(), ep.path.as_str()),
            ("localhost:8000", "/connection/websocket")
        );
        // TEST-NET-1: refused without the flag, accepted with it (resolving an address
        // literal sends nothing anywhere; no connection is opened here).
        let remote = "ws://192.0.2.1:1/connection/websocket";
        let e = format!("{:#}", endpoint(remote, false).await.unwrap_err());
        assert!(e.contains(remote) && e.contains(ALLOW_REMOTE), "{e}");
        let ep = endpoint(remote, true).await.unwrap();
        assert_eq!(ep.addr, "192.0.2.1:1".parse().unwrap());
        let list = [
            "ws://127.0.0.1:1/c".to_string(),
            "http://192.0.2.1:1".to_string(),
        ];
        let e = format!("{:#}", endpoints(&list, false).await.unwrap_err());
        assert!(
            e.contains("http://192.0.2.1:1") && e.contains(ALLOW_REMOTE),
            "{e}"
        );
        assert_eq!(endpoints(&list, true).await.unwrap().len(), 2);
        assert!(endpoint("wss://127.0.0.1:1/c", true).await.is_err());
    }
}
