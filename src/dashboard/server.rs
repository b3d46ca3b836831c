//! `tvck serve`: the dashboard's HTTP server. One thread follows every run (a poll of each
//! metrics.jsonl every [`ServerOptions::poll`], new run folders every
//! [`ServerOptions::discover`]) and appends what changed to a bounded event log; each
//! connection has a thread that answers one request, and each `/api/events` stream sends
//! the log's new events as they come (docs/json.md lists the routes and the events).
//!
//! It never writes in the runs folder, answers only `GET`/`HEAD` with bounded heads, caps
//! its connections and streams, and, bound to a loopback address, answers only requests
//! whose `Host` is a loopback name.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::monitor::rules::Settings;

use super::detail::{inspect_file, read_detail};
use super::http::{self, read_head, Request, Response};
use super::runs::{Change, Runs};
use super::series::json_number;
use super::DashboardError;

/// Connections served at once (streams included); more are answered 503.
pub const MAX_CONNECTIONS: usize = 64;
/// Event streams at once.
pub const MAX_STREAMS: usize = 16;
/// Events kept for streams that reconnect (`Last-Event-ID`) or start late (`?since=`).
pub const MAX_EVENTS: usize = 4096;
/// A stream with nothing to send says so this often (which also notices a closed page).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// A response that cannot be written within this time is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The page and its assets, embedded (no network at run time). uPlot is MIT-licensed
/// (assets/LICENSE-uPlot).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/uPlot.min.css"),
    ),
    (
        "LICENSE-uPlot",
        "text/plain; charset=utf-8",
        include_str!("assets/LICENSE-uPlot"),
    ),
];
const INDEX: &str = include_str!("assets/index.html");

/// How the server listens and polls.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    pub settings: Settings,
    /// How often every metrics.jsonl is read for new lines.
    pub poll: Duration,
    /// How often the folder is walked for new runs.
    pub discover: Duration,
}

impl ServerOptions {
    pub fn new(ip: IpAddr, port: u16, settings: Settings) -> ServerOptions {
        ServerOptions {
            addr: SocketAddr::new(ip, port),
            settings,
            poll: Duration::from_millis(200),
            discover: Duration::from_secs(2),
        }
    }
}

struct Event {
    seq: u64,
    name: &'static str,
    data: String,
}

struct State {
    runs: Runs,
    events: VecDeque<Event>,
    seq: u64,
    /// The last read error of each run that has one.
    errors: std::collections::BTreeMap<String, String>,
}

impl State {
    fn push(&mut self, name: &'static str, data: serde_json::Value) {
        self.seq += 1;
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.seq,
            name,
            data: data.to_string(),
        });
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Added(s) | Change::Summary(s) => self.push("run", json!(s)),
                Change::Epoch { run, epoch, values } => {
                    let values: serde_json::Map<String, serde_json::Value> = values
                        .into_iter()
                        .map(|(k, v)| (k, json_number(v)))
                        .collect();
                    self.push(
                        "epoch",
                        json!({ "run": run, "epoch": epoch, "values": values }),
                    )
                }
                Change::Restarted(run) => self.push("restart", json!({ "run": run })),
                Change::Alerts { run, alerts } => {
                    self.push("alerts", json!({ "run": run, "alerts": alerts }))
                }
            }
        }
    }

    fn poll(&mut self, epochs: bool) -> Vec<Change> {
        let (changes, errors) = if epochs {
            self.runs.poll()
        } else {
            self.runs.load()
        };
        self.errors = errors
            .into_iter()
            .map(|(n, e)| (n, e.to_string()))
            .collect();
        changes
    }
}

struct Hub {
    state: Mutex<State>,
    changed: Condvar,
    connections: AtomicUsize,
    streams: AtomicUsize,
    loopback_only: bool,
    root: PathBuf,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicked holder leaves consistent data (every change is applied whole).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bound server with the runs read once.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    options: ServerOptions,
}

/// Decrements a counter when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(counter: &AtomicUsize, max: usize) -> Option<Slot<'_>> {
    let n = counter.fetch_add(1, Ordering::SeqCst);
    if n >= max {
        counter.fetch_sub(1, Ordering::SeqCst);
        None
    } else {
        Some(Slot(counter))
    }
}

/// A connection's place among [`MAX_CONNECTIONS`], given back when dropped.
struct ConnSlot(Arc<Hub>);

impl ConnSlot {
    fn take(hub: &Arc<Hub>) -> Option<ConnSlot> {
        if hub.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            hub.connections.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(ConnSlot(hub.clone()))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Read every run under `root` once, then listen.
    pub fn bind(root: &Path, options: ServerOptions) -> Result<Server, DashboardError> {
        let mut runs = Runs::new(root, options.settings.clone())?;
        runs.discover();
        let mut state = State {
            runs,
            events: VecDeque::new(),
            seq: 0,
            errors: Default::default(),
        };
        // What is there at the start is the pages' first load, not events.
        state.poll(false);
        let listener = TcpListener::bind(options.addr).map_err(|source| DashboardError::Bind {
            addr: options.addr.to_string(),
            source,
        })?;
        Ok(Server {
            listener,
            hub: Arc::new(Hub {
                state: Mutex::new(state),
                changed: Condvar::new(),
                connections: AtomicUsize::new(0),
                streams: AtomicUsize::new(0),
                loopback_only: options.addr.ip().is_loopback(),
                root: root.to_path_buf(),
            }),
            options,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs found at the start.
    pub fn runs(&self) -> usize {
        self.hub.lock().runs.names().count()
    }

    /// Serve until the process ends.
    pub fn serve(self) -> Result<(), DashboardError> {
        let hub = self.hub.clone();
        let (poll, discover) = (self.options.poll, self.options.discover);
        std::thread::Builder::new()
            .name("tvck-serve-poll".into())
            .spawn(move || follow(&hub, poll, discover))
            .map_err(|source| DashboardError::Io {
                path: self.hub.root.clone(),
                source,
            })?;
        for conn in self.listener.incoming() {
            let Ok(mut stream) = conn else { continue };
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let Some(slot) = ConnSlot::take(&self.hub) else {
                let _ = Response::error(503, "too many connections").write(&mut stream, false);
                continue;
            };
            // A thread that cannot start drops its closure, and with it the slot.
            let _ = std::thread::Builder::new()
                .name("tvck-serve-conn".into())
                .spawn(move || handle(&slot.0, stream));
        }
        Ok(())
    }
}

/// The poller: every run, every `poll`; new runs every `discover`.
fn follow(hub: &Hub, poll: Duration, discover: Duration) {
    let mut last_walk = Instant::now();
    loop {
        std::thread::sleep(poll);
        let mut st = hub.lock();
        if last_walk.elapsed() >= discover {
            let added = st.runs.discover();
            st.apply(added);
            last_walk = Instant::now();
        }
        let changes = st.poll(true);
        if !changes.is_empty() {
            st.apply(changes);
            hub.changed.notify_all();
        }
    }
}

fn asset(name: &str) -> Option<Response> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ty, body)| Response::new(200, ty, body.as_bytes()))
}

fn handle(hub: &Hub, mut stream: TcpStream) {
    let req = match read_head(&mut stream) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(r) => {
            let _ = Response::error(r.status, r.message).write(&mut stream, false);
            linger(stream);
            return;
        }
    };
    let head_only = req.method == "HEAD";
    if hub.loopback_only && !req.header("host").is_some_and(http::loopback_host) {
        let _ = Response::error(
            421,
            "this dashboard answers only requests for localhost or 127.0.0.1",
        )
        .write(&mut stream, head_only);
        return;
    }
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if segs == ["api", "events"] {
        if head_only {
            let _ = stream.write_all(http::sse_head().as_bytes());
            return;
        }
        stream_events(hub, &req, stream);
        return;
    }
    let resp = route(hub, &segs);
    let _ = resp.write(&mut stream, head_only);
}

/// Close after an error without discarding the response: the rest of what the client
/// sent is read (a little, briefly), so the close is not a reset that could cut the
/// response short.
fn linger(mut stream: TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn route(hub: &Hub, segs: &[&str]) -> Response {
    match segs {
        [] | ["index.html"] => Response::new(200, "text/html; charset=utf-8", INDEX),
        ["assets", name] => asset(name).unwrap_or_else(|| Response::error(404, "no such asset")),
        ["api", "runs"] => {
            let st = hub.lock();
            Response::json(&json!({
                "format": 1,
                "root": hub.root.display().to_string(),
                "seq": st.seq,
                "runs": st.runs.summaries(),
                "left_out": st.runs.left_out,
                "errors": st.errors,
            }))
        }
        ["api", "alerts"] => {
            let st = hub.lock();
            Response::json(&json!({ "seq": st.seq, "alerts": st.runs.alerts() }))
        }
        ["api", "runs", name, "metrics"] => {
            let st = hub.lock();
            match st.runs.series(name) {
                Some(s) => Response::json(&json!({ "run": name, "seq": st.seq, "metrics": s })),
                None => Response::error(404, "no such run"),
            }
        }
        ["api", "runs", name] => {
            let (dir, summary) = {
                let st = hub.lock();
                match (st.runs.dir(name), st.runs.summary(name)) {
                    (Some(d), Some(s)) => (d.to_path_buf(), s.clone()),
                    _ => return Response::error(404, "no such run"),
                }
            };
            // Read outside the lock: checkpoints take a while to open.
            let d = read_detail(&dir, &hub.root);
            Response::json(&json!({
                "run": summary,
                "info": d.info,
                "configs": d.configs,
                "checkpoints": d.checkpoints,
            }))
        }
        ["api", "runs", name, "checkpoints", file] => {
            let dir = match hub.lock().runs.dir(name) {
                Some(d) => d.to_path_buf(),
                None => return Response::error(404, "no such run"),
            };
            match inspect_file(&dir, file) {
                Some(Ok(r)) => Response::json(&r),
                Some(Err(e)) => Response::error(500, &e),
                None => Response::error(404, "no such checkpoint in this run"),
            }
        }
        _ => Response::error(404, "no such page"),
    }
}

fn stream_events(hub: &Hub, req: &Request, mut stream: TcpStream) {
    let Some(_slot) = take_slot(&hub.streams, MAX_STREAMS) else {
        let _ = Response::error(503, "too many event streams").write(&mut stream, false);
        return;
    };
    let since = req
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| req.param("since"))
        .and_then(|s| s.trim().parse::<u64>().ok());
    if stream
        .write_all(format!("{}retry: 1000\n\n", http::sse_head()).as_bytes())
        .is_err()
    {
        return;
    }
    let mut at = {
        let st = hub.lock();
        let oldest = st.events.front().map_or(st.seq + 1, |e| e.seq);
        match since {
            // Events the client missed are gone: it reloads everything.
            Some(s) if s + 1 < oldest || s > st.seq => {
                let ev = http::sse_event(st.seq, "reset", "{}");
                if stream.write_all(ev.as_bytes()).is_err() {
                    return;
                }
                st.seq
            }
            Some(s) => s,
            None => st.seq,
        }
    };
    loop {
        let batch = {
            let mut st = hub.lock();
            if st.seq <= at {
                st = hub
                    .changed
                    .wait_timeout(st, KEEPALIVE)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let mut text = String::new();
            if st.events.front().is_some_and(|e| e.seq > at + 1) {
                // This stream fell behind the kept events: the page reloads everything.
                text.push_str(&http::sse_event(st.seq, "reset", "{}"));
                at = st.seq;
            }
            for e in st.events.iter().filter(|e| e.seq > at) {
                text.push_str(&http::sse_event(e.seq, e.name, &e.data));
            }
            at = st.seq;
            text
        };
        let text = if batch.is_empty() {
            ": keep-alive\n\n".to_string()
        } else {
            batch
        };
        if stream
            .write_all(text.as_bytes())
            .and_then(|_| stream.flush())
            .is_err()
        {
            return;
        }
    }
}
