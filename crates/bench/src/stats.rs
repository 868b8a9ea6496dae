//! Measurement shared by the scenarios: the payload every bench publication carries, a fast
//! parser for publication pushes, per-publisher stream tracking (loss, duplicates, reordering),
//! latency histograms bucketed per second, and server probes (RSS, FDs, CPU, store size).

use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use memchr::memmem;
use parking_lot::Mutex;

use super::client::Endpoint;

/// Microseconds since the unix epoch (publisher and subscriber share the machine's clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A latency histogram in microseconds, 1 µs .. 10 min, two significant digits (1 %).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// What fills a payload after its `p`, `seq` and `ts` (which compression cares about:
/// padding of one repeated byte compresses to nothing).
#[derive(
    clap::ValueEnum,
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// `"pad":"xx…"`.
    #[default]
    Pad,
    /// An analytics summary like the seeds' (top pages with their counters), cut to size.
    Analytics,
    /// Sensor readings (id, kind, value, unit, battery, location), cut to size.
    Sensor,
}

/// [`payload`] filled as `kind` says, about `size` bytes (never less than its three fields).
pub fn payload_of(kind: PayloadKind, p: u32, seq: u64, ts: u64, size: usize) -> String {
    if kind == PayloadKind::Pad {
        return payload(p, seq, ts, size);
    }
    let mut s = format!("{{\"p\":{p},\"seq\":{seq},\"ts\":{ts},\"items\":[");
    // Values move with seq like a live dashboard's; the structure repeats like real JSON.
    let mut i = 0u64;
    while s.len() + 2 < size {
        let v = seq.wrapping_mul(31).wrapping_add(i * 7919) % 100_000;
        if i > 0 {
            s.push(',');
        }
        let item = match kind {
            PayloadKind::Analytics => format!(
                "{{\"path\":\"/products/category-{}/item-{}\",\"views\":{},\"unique\":{},\"bounce_rate\":0.{:02},\"avg_time_s\":{}.{}}}",
                i % 12,
                v % 997,
                v,
                v / 3,
                v % 100,
                v % 300,
                v % 10
            ),
            _ => format!(
                "{{\"sensor\":\"s-{:04}\",\"kind\":\"temperature\",\"value\":{}.{},\"unit\":\"C\",\"battery\":{},\"site\":\"plant-{}\"}}",
                i,
                15 + v % 20,
                v % 10,
                v % 100,
                p
            ),
        };
        s.push_str(&item);
        i += 1;
    }
    s.push_str("]}");
    s
}

/// The JSON payload of publication `seq` of publisher `p`, padded to about `size` bytes:
/// `{"p":P,"seq":N,"ts":<micros>,"pad":"xx…"}`, where `ts` is the time (µs since the epoch)
/// latency counts from: when the publication was due. Key order is fixed: [`parse_pub`]
/// relies on it.
pub fn payload(p: u32, seq: u64, ts: u64, size: usize) -> String {
    let mut s = format!("{{\"p\":{p},\"seq\":{seq},\"ts\":{ts},\"pad\":\"");
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// What a subscriber reads from one publication push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubMsg {
    /// Publisher (stream) id.
    pub p: u32,
    /// Sequence number within the publisher's stream.
    pub seq: u64,
    /// Send time, µs since the epoch.
    pub ts: u64,
    /// Stream offset, when the channel keeps history.
    pub offset: Option<u64>,
}

fn digits(s: &[u8]) -> Option<(u64, usize)> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u64, |a, b| a * 10 + u64::from(b - b'0'));
    Some((v, n))
}

/// Parses a publication push carrying a bench payload without building a JSON tree; `None`
/// for anything else (replies, joins, foreign publications). Relies on the server's field
/// order (`{"push":{"channel":…,"pub":{"offset":N,"data":{…}`), which is fixed by its encoder.
pub fn parse_pub(line: &[u8]) -> Option<PubMsg> {
    // Searchers built once: `memmem::find` builds one per call, which took ~6 % of the whole
    // box's CPU in a one-publisher run at 1,000,000 deliveries/s (the generator shares it).
    static DATA_AT: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(DATA));
    static OFFSET_AT: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(OFFSET));
    const DATA: &[u8] = b"\"data\":{\"p\":";
    const OFFSET: &[u8] = b"\"pub\":{\"offset\":";
    if !line.starts_with(b"{\"push\":") {
        return None;
    }
    let at = DATA_AT.find(line)? + DATA.len();
    let (p, n) = digits(&line[at..])?;
    let rest = line[at + n..].strip_prefix(b",\"seq\":")?;
    let (seq, n) = digits(rest)?;
    let rest = rest[n..].strip_prefix(b",\"ts\":")?;
    let (ts, _) = digits(rest)?;
    let offset = OFFSET_AT
        .find(&line[..at])
        .and_then(|i| digits(&line[i + OFFSET.len()..]).map(|d| d.0));
    Some(PubMsg {
        p: u32::try_from(p).ok()?,
        seq,
        ts,
        offset,
    })
}

/// Parses a command reply line (`{"id":N,…}`): its id, and whether it is an error reply
/// (`{"id":N,"error":…}`, the server's field order). `None` for pushes and anything else.
pub fn parse_reply(line: &[u8]) -> Option<(u32, bool)> {
    let rest = line.strip_prefix(b"{\"id\":")?;
    let (id, n) = digits(rest)?;
    Some((
        u32::try_from(id).ok()?,
        rest[n..].starts_with(b",\"error\""),
    ))
}

/// A growable bit set of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Inserts `seq`; returns false if it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        if !had {
            self.len += 1;
        }
        !had
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Members.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members of `self` that are not in `other`.
    pub fn count_missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }

    /// Members of `self` that are also in `other`.
    pub fn count_common(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .zip(other.words.iter())
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

/// What one subscriber saw of one publisher's stream.
#[derive(Debug, Default, Clone)]
pub struct StreamSeen {
    /// Distinct sequence numbers received.
    pub seqs: SeqSet,
    /// Highest sequence number received so far.
    pub max: Option<u64>,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages that arrived after a higher sequence number of the same stream.
    pub reordered: u64,
    /// A fingerprint of the order the distinct sequence numbers arrived in: subscribers that
    /// received the same messages in the same order have the same one.
    pub order: u64,
    /// A fingerprint of the set of distinct sequence numbers, whatever their order.
    pub set: u64,
}

/// Mixes `x` into 64 well-spread bits (the splitmix64 finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl StreamSeen {
    /// Accounts for one received message.
    pub fn record(&mut self, seq: u64) {
        if !self.seqs.insert(seq) {
            self.duplicates += 1;
            return;
        }
        self.order = mix(self.order ^ mix(seq));
        self.set = self.set.wrapping_add(mix(seq));
        match self.max {
            Some(m) if seq < m => self.reordered += 1,
            _ => self.max = Some(seq),
        }
    }
}

/// Deliveries and latencies of one second of a run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Messages delivered in this second.
    pub deliveries: u64,
    /// Their latencies (µs).
    pub hist: Histogram<u64>,
}

/// Latencies of a whole run, bucketed per second since its start, shared by recording tasks.
pub struct Timeline {
    /// Start of the run (µs since the epoch).
    pub start_micros: u64,
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new() -> Arc<Timeline> {
        Timeline::starting_at(now_micros())
    }

    /// A timeline starting at `start_micros` (µs since the epoch).
    pub fn starting_at(start_micros: u64) -> Arc<Timeline> {
        Arc::new(Timeline {
            start_micros,
            seconds: Mutex::new(Vec::new()),
        })
    }

    /// The second (since start) that `micros` falls in.
    pub fn second_of(&self, micros: u64) -> usize {
        (micros.saturating_sub(self.start_micros) / 1_000_000) as usize
    }

    fn merge(&self, sec: usize, deliveries: u64, hist: &Histogram<u64>) {
        let mut s = self.seconds.lock();
        while s.len() <= sec {
            s.push(Second {
                deliveries: 0,
                hist: histogram(),
            });
        }
        s[sec].deliveries += deliveries;
        let _ = s[sec].hist.add(hist);
    }

    /// Every second so far.
    pub fn seconds(&self) -> Vec<Second> {
        self.seconds.lock().clone()
    }

    /// All latencies of the run in one histogram.
    pub fn total(&self) -> Histogram<u64> {
        let mut h = histogram();
        for s in self.seconds.lock().iter() {
            let _ = h.add(&s.hist);
        }
        h
    }

    /// Deliveries so far.
    pub fn deliveries(&self) -> u64 {
        self.seconds.lock().iter().map(|s| s.deliveries).sum()
    }
}

/// A task-local recorder that merges into a [`Timeline`] once per second (and on flush), so
/// tasks do not contend on every message.
pub struct Recorder {
    timeline: Arc<Timeline>,
    sec: usize,
    count: u64,
    hist: Histogram<u64>,
}

impl Recorder {
    /// A recorder feeding `timeline`.
    pub fn new(timeline: Arc<Timeline>) -> Recorder {
        Recorder {
            timeline,
            sec: 0,
            count: 0,
            hist: histogram(),
        }
    }

    /// Records one delivery received at `now` (µs) with latency `micros`.
    pub fn record(&mut self, now: u64, micros: u64) {
        let sec = self.timeline.second_of(now);
        if sec != self.sec {
            self.flush();
            self.sec = sec;
        }
        self.count += 1;
        self.hist.saturating_record(micros.max(1));
    }

    /// Merges what is pending into the timeline.
    pub fn flush(&mut self) {
        if self.count > 0 {
            self.timeline.merge(self.sec, self.count, &self.hist);
            self.hist.reset();
            self.count = 0;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile (`bench run` thresholds such as `connect_p95`).
    #[serde(default)]
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of a µs histogram, in ms.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// (percentile, ms) points for a percentile plot: 0 … 99.9999 on a log "nines" scale.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..=120 {
        // 1 - 10^(-i/20): 0, .., 90, .., 99, .., 99.9, .., 99.9999
        let q = 1.0 - 10f64.powf(-(i as f64) / 20.0);
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

/// One reading of the servers under test (summed over every probed node).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerSample {
    /// Seconds since the run started.
    pub t: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// CPU time used so far (user + system), seconds; only with `--pid`.
    pub cpu_secs: f64,
    /// sled store size, bytes; only with `--admin`.
    pub store_bytes: u64,
    /// WebSocket payload bytes written to clients so far (after compression); only with
    /// `--admin`.
    #[serde(default)]
    pub bytes_out: u64,
}

// The server metrics the probe reads from `/metrics`: part of the server's public metrics
// contract, named here because the bench does not depend on the server crate (the root
// package's tests/bench.rs checks they equal `switchyard::metrics`).
/// Resident memory of the server process, bytes.
pub const PROCESS_RSS: &str = "switchyard_process_resident_memory_bytes";
/// Open file descriptors of the server process.
pub const PROCESS_FDS: &str = "switchyard_process_open_fds";
/// sled store size on disk, bytes.
pub const STORE_BYTES: &str = "switchyard_store_bytes";
/// WebSocket payload bytes written to clients (after compression).
pub const BYTES_OUT: &str = "switchyard_bytes_out_total";

/// Reads server figures from `/proc/<pid>` and/or an admin listener's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Server process ids (same machine).
    pub pids: Vec<u32>,
    /// Admin listeners (`http://host:port`).
    pub admins: Vec<Endpoint>,
}

fn proc_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn proc_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / tck)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

impl Probe {
    /// Whether there is anything to probe.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.admins.is_empty()
    }

    /// One reading; `t` is the run's clock.
    pub async fn sample(&self, t: f64) -> ServerSample {
        let mut s = ServerSample {
            t,
            ..Default::default()
        };
        for &pid in &self.pids {
            s.rss_bytes += proc_rss(pid).unwrap_or(0);
            s.cpu_secs += proc_cpu(pid).unwrap_or(0.0);
            s.fds += std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0);
        }
        for ep in &self.admins {
            let Ok(body) = super::client::http_get(ep, "/metrics").await else {
                continue;
            };
            let text = String::from_utf8_lossy(&body);
            let get = |n| metric(&text, n).unwrap_or(0.0) as u64;
            if self.pids.is_empty() {
                s.rss_bytes += get(PROCESS_RSS);
                s.fds += get(PROCESS_FDS);
            }
            s.store_bytes += get(STORE_BYTES);
            s.bytes_out += get(BYTES_OUT);
        }
        s
    }
}

/// Least-squares slope of `y` over `x` (per unit of x); 0 with fewer than two points.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// A monotonic stopwatch in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Seconds since start.
    pub fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_publication_push() {
        let data = payload(3, 42, 1_700_000_000_000_000, 100);
        assert!((98..=102).contains(&data.len()), "{}", data.len());
        let line = format!(
            "{{\"push\":{{\"channel\":\"chat:b\",\"pub\":{{\"offset\":17,\"data\":{data},\"info\":{{\"user\":\"u\",\"client\":\"c\"}}}}}}}}"
        );
        let m = parse_pub(line.as_bytes()).unwrap();
        assert_eq!((m.p, m.seq, m.offset), (3, 42, Some(17)));
        assert_eq!(m.ts, 1_700_000_000_000_000);
        assert!(parse_pub(b"{\"id\":1,\"publish\":{}}").is_none());
    }

    #[test]
    fn parses_replies_and_their_errors() {
        assert_eq!(parse_reply(b"{\"id\":7,\"publish\":{}}"), Some((7, false)));
        assert_eq!(
            parse_reply(b"{\"id\":8,\"error\":{\"code\":111,\"message\":\"too many requests\"}}"),
            Some((8, true))
        );
        assert_eq!(parse_reply(b"{\"push\":{\"channel\":\"c\"}}"), None);
    }

    #[test]
    fn stream_tracking_counts_dups_and_reordering() {
        let mut s = StreamSeen::default();
        for q in [0, 1, 3, 2, 3] {
            s.record(q);
        }
        assert_eq!((s.seqs.len(), s.duplicates, s.reordered), (4, 1, 1));
        // The same messages in another order: the same set, another order.
        let mut t = StreamSeen::default();
        for q in [0, 1, 2, 3, 2] {
            t.record(q);
        }
        assert_eq!((t.set, t.seqs.len()), (s.set, s.seqs.len()));
        assert_ne!(t.order, s.order);
        let mut u = StreamSeen::default();
        for q in [0, 1, 3, 2] {
            u.record(q);
        }
        assert_eq!((u.set, u.order), (s.set, s.order));
        let mut acked = SeqSet::default();
        for q in 0..5 {
            acked.insert(q);
        }
        assert_eq!(acked.count_missing_from(&s.seqs), 1);
        assert_eq!(acked.count_common(&s.seqs), 4);
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
    }
}
