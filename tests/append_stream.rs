//! The follower's side of pipelined replication, over the wire: a leader's append stream on
//! the cluster listener (an HTTP/1.1 upgrade, then length-prefixed frames: a tag byte and
//! JSON). Requests are answered in order, a clean session leaves the connection open, and a
//! refusal or a malformed frame closes the connection without harming the node. (The leader's
//! side runs in every cluster test: it is how the leader replicates.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use openraft::raft::{AppendEntriesRequest, StreamAppendError};
use serde_json::json;
use switchyard::store::types::{TypeConfig, Vote};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Answer = Result<
    Result<
        Option<openraft::type_config::alias::LogIdOf<TypeConfig>>,
        StreamAppendError<TypeConfig>,
    >,
    String,
>;

/// Sends the upgrade request; returns the status line and the stream.
async fn upgrade(cluster: SocketAddr, protocol: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(cluster).await.unwrap();
    let req = format!(
        "POST /raft/append-stream HTTP/1.1\r\nHost: {cluster}\r\nConnection: upgrade\r\n\
         Upgrade: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    (head.lines().next().unwrap_or_default().to_string(), s)
}

async fn send(s: &mut TcpStream, tag: u8, body: &[u8]) {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(tag);
    f.extend_from_slice(body);
    s.write_all(&f).await.unwrap();
}

async fn send_request(s: &mut TcpStream, vote: Vote) {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: None,
        leader_commit: None,
        entries: vec![],
    };
    send(s, b'R', &serde_json::to_vec(&req).unwrap()).await;
}

/// The next frame, or `None` when the node closed the connection.
async fn recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut f).await.ok()?;
        Some(f)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer or the close within 10 s")
}

fn answer(f: &[u8]) -> Answer {
    assert_eq!(f.first(), Some(&b'A'), "an answer frame");
    serde_json::from_slice(&f[1..]).expect("answer JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_append_stream_is_answered_in_order_and_bad_frames_close_it() {
    let mut s = TestServer::start().await;
    let cluster = s.server.as_ref().unwrap().cluster_addr;
    // The single node leads (a publish commits).
    s.publish("chat:a", json!(1)).await;

    // Another protocol, or none: refused.
    let (status, _) = upgrade(cluster, "websocket").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");

    // An empty session: END is answered by DONE, and the connection stays for the next.
    let (status, mut io) = upgrade(cluster, "switchyard-append-stream").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    send(&mut io, b'E', b"").await;
    assert_eq!(recv(&mut io).await.as_deref(), Some(&b"D"[..]));
    // Two requests from a stale leader, pipelined: the first is refused with this node's
    // higher vote, and the refusal ends the session and closes the connection.
    send_request(&mut io, Vote::new_committed(0, 99)).await;
    send_request(&mut io, Vote::new_committed(0, 99)).await;
    let first = recv(&mut io).await.expect("an answer");
    assert!(
        matches!(answer(&first), Ok(Err(StreamAppendError::HigherVote(_)))),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    assert_eq!(recv(&mut io).await, None, "closed after the refusal");

    // Malformed frames close the connection: an unknown tag, a request that is not JSON, an
    // END with a body.
    for (tag, body) in [(b'X', &b"{}"[..]), (b'R', b"{not json"), (b'E', b"x")] {
        let (status, mut io) = upgrade(cluster, "switchyard-append-stream").await;
        assert!(status.starts_with("HTTP/1.1 101"), "{status}");
        send(&mut io, tag, body).await;
        assert_eq!(
            recv(&mut io).await,
            None,
            "closed after a bad {} frame",
            tag as char
        );
    }

    // None of that harmed the node: it still leads and commits.
    let r = s.publish("chat:a", json!(2)).await;
    assert_eq!(r["offset"], 2);

    // A leader with a higher vote: its pipelined requests are answered in order, each a
    // success, then END is answered by DONE on the same connection.
    let (_, mut io) = upgrade(cluster, "switchyard-append-stream").await;
    let vote = Vote::new_committed(1_000, 99);
    for _ in 0..3 {
        send_request(&mut io, vote).await;
    }
    send(&mut io, b'E', b"").await;
    for n in 0..3 {
        let f = recv(&mut io).await.expect("an answer");
        assert!(
            matches!(answer(&f), Ok(Ok(_))),
            "answer {n}: {:?}",
            String::from_utf8_lossy(&f)
        );
    }
    assert_eq!(recv(&mut io).await.as_deref(), Some(&b"D"[..]));
    s.stop().await;
}
