//! Operating-system integration for running under systemd: the service notification protocol
//! (sd_notify(3): `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…` sent as one datagram to
//! `$NOTIFY_SOCKET`), the watchdog settings systemd passes in `$WATCHDOG_USEC` /
//! `$WATCHDOG_PID`, and the open-file limit (one descriptor per client connection). Nothing
//! here fails a node that runs without systemd: with no `$NOTIFY_SOCKET` every send is a no-op.
//! Also the build's identity, [`VERSION`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// The version with the commit it was built from (`build.rs`): what `switchyard --version`
/// prints, and each node reports in `info` and on its status page.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SY_BUILD_COMMIT"),
    ")"
);

/// Puts the calling thread on real-time round-robin scheduling (SCHED_RR) at `priority`
/// (1–99). Fails with `EPERM` without CAP_SYS_NICE or an RLIMIT_RTPRIO that allows it.
pub fn set_thread_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: plain FFI on the calling thread with a valid, initialised parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_RR, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Asks the kernel's fair scheduler (EEVDF, Linux 6.12 and later) for a time slice of
/// `slice` for the calling thread (the kernel keeps it within 0.1–100 ms), keeping its policy
/// (SCHED_OTHER) and nice value. A waking thread's virtual deadline is its slice away, so a
/// thread with a shorter slice than the default (a few ms) preempts longer-running ones on
/// wake-up sooner, while its share of the CPU stays what its nice value gives. No privilege
/// is needed; kernels before 6.12 accept the call and keep their default.
pub fn set_thread_slice(slice: Duration) -> io::Result<()> {
    /// `struct sched_attr` as of Linux 3.14 (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    // SAFETY: gettid and getpriority on the calling thread; sched_setattr reads a valid,
    // initialised attribute of the size it is told.
    unsafe {
        let tid = libc::gettid();
        // The thread's current nice value, passed back unchanged (raising it needs privilege).
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
            deadline: 0,
            period: 0,
        };
        let rc = libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0);
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Makes the calling thread `by` nicer (lower priority under the fair scheduler) than it is,
/// up to 19. Only ever lowers priority, which needs no
/// privilege, and what it lowers cannot be raised back without privilege; threads the caller
/// starts afterwards inherit it.
pub fn lower_thread_priority(by: u8) -> io::Result<()> {
    // SAFETY: gettid, getpriority and setpriority on the calling thread only.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // -1 is a valid nice value: errno tells it from a failure.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        let nice = (now + i32::from(by)).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
pub fn thread_policy() -> i32 {
    // SAFETY: querying the calling thread's own policy.
    unsafe { libc::sched_getscheduler(0) }
}

/// Where `$NOTIFY_SOCKET` says the service manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket in the file system (`/run/systemd/notify`).
    Path(PathBuf),
    /// A Linux abstract socket: `$NOTIFY_SOCKET` starts with `@`, the name is what follows.
    Abstract(Vec<u8>),
}

impl NotifyAddr {
    /// Parses `$NOTIFY_SOCKET`. `None` for an empty value or one that is neither an absolute
    /// path nor `@name` (systemd's `vsock:` addresses are not supported).
    pub fn parse(value: &OsStr) -> Option<NotifyAddr> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = value.as_bytes();
        match bytes.first()? {
            b'/' => Some(NotifyAddr::Path(PathBuf::from(value))),
            b'@' if bytes.len() > 1 => Some(NotifyAddr::Abstract(bytes[1..].to_vec())),
            _ => None,
        }
    }
}

/// A client of the service manager's notification socket. Build it once with
/// [`Notifier::from_env`]; sends are cheap (one datagram on an unbound socket).
#[derive(Debug)]
pub struct Notifier {
    addr: NotifyAddr,
    sock: UnixDatagram,
}

impl Notifier {
    /// `Ok(None)` when the process was not started by a service manager that wants
    /// notifications (`$NOTIFY_SOCKET` unset, empty or unsupported).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET").and_then(|v| NotifyAddr::parse(&v)) {
            Some(addr) => Notifier::new(addr).map(Some),
            None => Ok(None),
        }
    }

    pub fn new(addr: NotifyAddr) -> io::Result<Notifier> {
        Ok(Notifier {
            addr,
            sock: UnixDatagram::unbound()?,
        })
    }

    /// Sends one notification: newline-separated `KEY=VALUE` assignments.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let n = match &self.addr {
            NotifyAddr::Path(p) => self.sock.send_to(state.as_bytes(), p)?,
            NotifyAddr::Abstract(name) => send_abstract(&self.sock, state.as_bytes(), name)?,
        };
        if n != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short notify write",
            ));
        }
        Ok(())
    }

    /// `READY=1`: start-up is finished (every listener is bound), with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\n{}", status_line(status)))
    }

    /// `WATCHDOG=1`: the process is alive; resets systemd's `WatchdogSec=` timer.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// `STOPPING=1`: shutdown has begun, with a status line.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STOPPING=1\n{}", status_line(status)))
    }

    /// `STATUS=…`: free-form text shown by `systemctl status`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&status_line(status))
    }
}

/// `STATUS=<text>` on one line (a newline would start a new assignment).
fn status_line(status: &str) -> String {
    format!("STATUS={}", status.replace(['\n', '\r'], " "))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, buf: &[u8], name: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(buf, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// The watchdog timeout systemd expects `WATCHDOG=1` within, when it is enabled for this
/// process (`WatchdogSec=` in the unit). Send at half this interval.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The rules of sd_watchdog_enabled(3): `WATCHDOG_USEC` must be a positive number of
/// microseconds (not infinity), and when `WATCHDOG_PID` is set it must be this process's pid —
/// otherwise the variables were inherited from a parent and the watchdog is someone else's.
pub fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 || usec == u64::MAX {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (each client connection is a
/// file descriptor) and returns the `(soft, hard)` limits in force afterwards. If raising is
/// refused, the unchanged limits are returned; an error only when they cannot be read.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into memory we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the `rlimit` we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // rlim_t is u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn notify_socket_forms() {
        assert_eq!(
            NotifyAddr::parse(OsStr::new("/run/systemd/notify")),
            Some(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyAddr::parse(OsStr::new("@/org/freedesktop/systemd1/notify/123")),
            Some(NotifyAddr::Abstract(
                b"/org/freedesktop/systemd1/notify/123".to_vec()
            ))
        );
        // Non-UTF-8 bytes are kept as they are.
        assert_eq!(
            NotifyAddr::parse(OsStr::from_bytes(b"@n\xff")),
            Some(NotifyAddr::Abstract(b"n\xff".to_vec()))
        );
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert_eq!(NotifyAddr::parse(OsStr::new(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn watchdog_rules() {
        let me = 4242;
        assert_eq!(
            parse_watchdog(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("1500"), Some("4242"), me),
            Some(Duration::from_micros(1500))
        );
        // Set for another process (inherited from a parent): not ours.
        assert_eq!(parse_watchdog(Some("30000000"), Some("1"), me), None);
        // Unset, zero, infinity, junk, junk pid.
        assert_eq!(parse_watchdog(None, Some("4242"), me), None);
        assert_eq!(parse_watchdog(Some("0"), None, me), None);
        assert_eq!(parse_watchdog(Some(&u64::MAX.to_string()), None, me), None);
        assert_eq!(parse_watchdog(Some("30s"), None, me), None);
        assert_eq!(parse_watchdog(Some("-5"), None, me), None);
        assert_eq!(parse_watchdog(Some("1000"), Some(""), me), None);
        assert_eq!(parse_watchdog(Some("1000"), Some("x"), me), None);
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_line("a\nb\r\nc"), "STATUS=a b  c");
    }

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(NotifyAddr::parse(path.as_os_str()).unwrap()).unwrap();
        n.ready("serving\non 8000").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=serving on 8000");
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
        n.stopping("draining").unwrap();
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=draining");
        n.status("x").unwrap();
        assert_eq!(recv(&server), "STATUS=x");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("switchyard-test-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(NotifyAddr::parse(OsStr::new(&format!("@{name}"))).unwrap()).unwrap();
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(NotifyAddr::Path(dir.path().join("absent"))).unwrap();
        assert!(n.watchdog().is_err());
    }

    /// Lowers the soft limit, then checks that raise_nofile_limit brings it back to the hard
    /// one (in this test process; other tests keep plenty of descriptors meanwhile).
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn nofile_soft_limit_is_raised_to_hard() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let hard = lim.rlim_max;
        let lowered = libc::rlimit {
            rlim_cur: (hard / 2).max(256).min(hard),
            rlim_max: hard,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let (soft, reported_hard) = raise_nofile_limit().unwrap();
        assert_eq!((soft, reported_hard), (hard as u64, hard as u64));
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, hard, "the kernel has the raised soft limit");
    }
}
