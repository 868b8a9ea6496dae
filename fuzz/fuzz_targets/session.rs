//! A whole client session on a real in-process node (one-voter cluster, data in a temp dir):
//! the input is split at NUL bytes into text messages, each handed to `Session::handle_message`
//! as the transport would (invalid UTF-8 never reaches a session: the reader closes with 1007).
//! An input starting with byte 0xB1 is a Protobuf session instead: the rest is binary
//! messages, each behind a 2-byte little-endian length.
//! Anonymous connections are allowed, so inputs reach every command after `connect`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard::node::Node;
use switchyard::session::Session;
use switchyard::conn::Conn;
use switchyard::protocol::Encoding;
use switchyard::protocol::proto::Reply;
use switchyard::{Config, Server};

/// Most messages taken from one input.
const MAX_MESSAGES: usize = 64;

struct Harness {
    rt: tokio::runtime::Runtime,
    node: Arc<Node>,
    _server: Server,
    _data: tempfile::TempDir,
}

const CONFIG: &str = r#"
[client]
listen = "127.0.0.1:0"
max_message_size = 65536
[admin]
listen = "127.0.0.1:0"
[cluster]
listen = "127.0.0.1:0"
heartbeat_interval = "50ms"
election_timeout_min = "150ms"
election_timeout_max = "300ms"
[auth]
token_hmac_secret = "fuzz-secret"
allow_anonymous = true
[log]
level = "error"
[channel]
presence = true
join_leave = true
history_size = 10
history_ttl = "1m"
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_client = true
allow_history_for_client = true
allow_user_limited_channels = true
[[channel.namespaces]]
name = "chat"
history_size = 10
history_ttl = "1m"
presence = true
join_leave = true
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
"#;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // tmpfs when there is one: every publish is an fsync'd Raft commit.
        let data = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let toml = format!("{CONFIG}\n[node]\ndata_dir = {:?}\n", data.path());
        let cfg = Config::from_toml(&toml).expect("fuzz config");
        let server = rt.block_on(Server::start(cfg)).expect("node starts");
        let node = server.node.clone();
        rt.block_on(async {
            // Wait until the one-voter cluster has its leader, so writes do not just time out.
            for _ in 0..500 {
                if node.is_ready() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Harness {
            rt,
            node,
            _server: server,
            _data: data,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        let conn = Arc::new(Conn::new(
            h.node.next_conn_id(),
            h.node.cfg().client.outbound_queue_bytes,
        ));
        let protobuf = data.first() == Some(&0xB1);
        let messages: Vec<&[u8]> = if protobuf {
            conn.out.set_encoding(Encoding::Protobuf);
            let mut rest = &data[1..];
            std::iter::from_fn(|| {
                let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
                let msg = rest.get(2..2 + len.min(rest.len() - 2))?;
                rest = &rest[2 + msg.len()..];
                Some(msg)
            })
            .take(MAX_MESSAGES)
            .collect()
        } else {
            data.split(|b| *b == 0).take(MAX_MESSAGES).collect()
        };
        let mut session = Session::new(h.node.clone(), conn.clone());
        for msg in messages {
            if !protobuf && std::str::from_utf8(msg).is_err() {
                break;
            }
            if session.handle_message(msg).await.is_err() || conn.out.is_closing() {
                break;
            }
        }
        session.close().await;
        // What the writer would have sent: every queued reply is one JSON object, or one
        // length-delimited Protobuf Reply.
        let batch = conn.out.take();
        if std::env::var_os("SWITCHYARD_FUZZ_DEBUG").is_some() {
            for m in &batch.messages {
                eprintln!("reply: {}", String::from_utf8_lossy(&m.json));
            }
            eprintln!("close: {:?}", batch.close);
        }
        for m in batch.messages.iter().map(|m| &m.json) {
            if protobuf {
                let mut buf = &m[..];
                assert!(
                    prost::Message::decode_length_delimited(&mut buf)
                        .map(|_: Reply| buf.is_empty())
                        .unwrap_or(false),
                    "reply is not one length-delimited Reply: {m:?}"
                );
                continue;
            }
            assert!(
                m.first() == Some(&b'{') && m.last() == Some(&b'}'),
                "reply is not a JSON object: {:?}",
                String::from_utf8_lossy(m)
            );
        }
    });
});
