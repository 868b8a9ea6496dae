//! The binary under systemd's notification protocol, as the unit in systemd/ runs it
//! (`Type=notify`, `WatchdogSec=`): the test plays the service manager with a unix datagram
//! socket in `$NOTIFY_SOCKET` and checks READY=1 once listening, periodic WATCHDOG=1, that
//! SIGHUP (`systemctl reload`) does not kill the node, STOPPING=1 on SIGTERM and exit 0.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{WAIT, config_file};

/// The node as a child process, killed on drop; its stderr (JSON logs) goes to a file.
struct Node {
    child: Child,
    log: PathBuf,
    _config: tempfile::NamedTempFile,
}

impl Node {
    /// Starts `switchyard serve` with the test config, as systemd would: `NOTIFY_SOCKET` and
    /// `watchdog_usec`, and no `WATCHDOG_PID` unless given (systemd sets it to the main pid,
    /// which the test cannot know before the spawn; unset means "this process").
    fn start(dir: &Path, notify: &Path, watchdog_usec: &str, watchdog_pid: Option<&str>) -> Node {
        Node::start_with(
            Command::new(env!("CARGO_BIN_EXE_switchyard")),
            dir,
            notify,
            watchdog_usec,
            watchdog_pid,
        )
    }

    fn start_with(
        mut cmd: Command,
        dir: &Path,
        notify: &Path,
        watchdog_usec: &str,
        watchdog_pid: Option<&str>,
    ) -> Node {
        let cfg = config_file("");
        let log = dir.join("stderr.log");
        cmd.arg("serve")
            .arg("--config")
            .arg(cfg.path())
            .env("SWITCHYARD_LOG__FORMAT", "json")
            .env("SWITCHYARD_NODE__DATA_DIR", dir.join("data"))
            .env("NOTIFY_SOCKET", notify)
            .env("WATCHDOG_USEC", watchdog_usec)
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(pid) = watchdog_pid {
            cmd.env("WATCHDOG_PID", pid);
        }
        let child = cmd.spawn().expect("spawn switchyard");
        Node {
            child,
            log,
            _config: cfg,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig}");
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("node exited ({st}); log:\n{}", self.log());
        }
    }

    /// Polls until the log contains `needle`.
    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service manager's end: a datagram socket in a temp dir.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        Manager { sock, path }
    }

    /// Receives notifications until one satisfies `want`; returns it. Fails after `WAIT`.
    fn recv_until(&self, node: &mut Node, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.recv_within(WAIT, node, what, want)
    }

    /// The first notification, READY=1: start-up (opening the store, electing itself) gets the
    /// same 20 s as the other tests of the binary give it, for a loaded machine.
    fn recv_ready(&self, node: &mut Node) -> String {
        self.recv_within(Duration::from_secs(20), node, "a notification", |_| true)
    }

    fn recv_within(
        &self,
        within: Duration,
        node: &mut Node,
        what: &str,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what} within {within:?}; got {seen:?}; log:\n{}",
                node.log()
            );
            // Short reads, so that a node that died is reported as such.
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
                    if want(&msg) {
                        return msg;
                    }
                    seen.push(msg);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    node.assert_running();
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
    }
}

fn lines(msg: &str) -> Vec<&str> {
    msg.split('\n').collect()
}

#[test]
fn ready_watchdog_reload_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::bind(dir.path());
    let mut node = Node::start(dir.path(), &manager.path, "1000000", None);

    // READY=1 is the first notification, and the client listener it names accepts connections.
    let ready = manager.recv_ready(&mut node);
    let ready = lines(&ready);
    assert_eq!(ready[0], "READY=1", "first notification: {ready:?}");
    let status = ready
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=serving clients on "))
        .unwrap_or_else(|| panic!("no serving status in {ready:?}"));
    let client: SocketAddr = status.split(',').next().unwrap().parse().unwrap();
    TcpStream::connect_timeout(&client, WAIT).expect("client listener accepts after READY=1");
    assert!(node.log().contains("systemd watchdog enabled"));

    // WatchdogSec=1s: pings every 0.5 s; wait for two to see that they repeat.
    for _ in 0..2 {
        manager.recv_until(&mut node, "WATCHDOG=1", |m| m == "WATCHDOG=1");
    }

    // `systemctl reload` sends SIGHUP: the node logs and keeps running (and pinging).
    node.signal("HUP");
    node.wait_log("SIGHUP");
    manager.recv_until(&mut node, "WATCHDOG=1 after SIGHUP", |m| m == "WATCHDOG=1");
    node.assert_running();

    // SIGTERM: STOPPING=1 before the drain, then a clean exit.
    node.signal("TERM");
    let stopping = manager.recv_until(&mut node, "STOPPING=1", |m| m != "WATCHDOG=1");
    assert_eq!(lines(&stopping)[0], "STOPPING=1", "{stopping:?}");
    let st = node.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "exit status; log:\n{}", node.log());
}

/// `WATCHDOG_PID` naming another process means the variables were inherited, not meant for
/// this one: no watchdog, but READY=1 and STOPPING=1 all the same.
#[test]
fn watchdog_for_another_pid_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::bind(dir.path());
    let mut node = Node::start(dir.path(), &manager.path, "1000000", Some("1"));

    let ready = manager.recv_ready(&mut node);
    assert_eq!(lines(&ready)[0], "READY=1", "{ready:?}");
    // The watchdog decision is logged before READY=1 is sent.
    assert!(
        !node.log().contains("systemd watchdog enabled"),
        "watchdog enabled for WATCHDOG_PID=1:\n{}",
        node.log()
    );
    // Right after READY=1: the signal handlers are installed before it is sent.
    node.signal("TERM");
    let next = manager.recv_until(&mut node, "STOPPING=1", |_| true);
    assert_eq!(
        lines(&next)[0],
        "STOPPING=1",
        "no WATCHDOG=1 expected: {next:?}"
    );
    assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

/// The hard open-file limit of this (test) process, from /proc/self/limits.
fn hard_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// Started with a soft open-file limit below the hard one (as from a login shell), the node
/// raises the soft limit to the hard one and logs both.
#[test]
fn nofile_soft_limit_is_raised_and_logged() {
    let hard = hard_nofile();
    assert!(
        hard > 512,
        "this test needs a hard nofile limit above 512, got {hard}"
    );
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::bind(dir.path());
    // sh lowers its soft limit, then execs the node with it.
    let mut sh = Command::new("sh");
    sh.args(["-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_switchyard"));
    let mut node = Node::start_with(sh, dir.path(), &manager.path, "0", None);
    let ready = manager.recv_until(&mut node, "READY=1", |m| m.starts_with("READY=1"));
    assert!(ready.starts_with("READY=1"));
    let log = node.log();
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("open-file limit"))
        })
        .unwrap_or_else(|| panic!("no open-file limit line in the log:\n{log}"));
    assert_eq!(line["fields"]["soft"], hard, "{line}");
    assert_eq!(line["fields"]["hard"], hard, "{line}");
    assert_eq!(line["fields"]["max_connections"], hard - 256, "{line}");
    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)).code(), Some(0));
}
