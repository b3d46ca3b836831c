//! `tvck serve` over a real socket: the JSON API (snapshots), the event stream receiving a
//! line appended to metrics.jsonl and the alert it raises, odd run names, path traversal,
//! the limits on requests and streams, and that the runs folder is never written.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, root};

/// A `tvck serve` process on a free port, killed when dropped.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
}

impl Served {
    pub fn start(dir: &Path, extra: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tvck"))
            .arg("serve")
            .arg(dir)
            .args(["--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tvck serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("tvck serve did not start: {err}");
        }
        // "tvck serve: http://127.0.0.1:PORT/ (…)"
        let url = line.split_whitespace().nth(2).expect("a URL");
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|_| panic!("an address in {line:?}"));
        Served { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw request; the status, the head and the body.
pub fn request(addr: SocketAddr, raw: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, buf[end + 4..].to_vec())
}

/// `GET path` with a loopback Host.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, head, body) = get(addr, path);
    assert_eq!(
        status,
        200,
        "{path}: {head}\n{}",
        String::from_utf8_lossy(&body)
    );
    assert!(head.contains("Content-Type: application/json"), "{head}");
    serde_json::from_slice(&body).unwrap()
}

/// Percent-encode a path segment.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn append(p: &Path, s: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(s.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// The name of the nested run with odd characters.
pub const ODD: &str = "group/gamma <b>&\"é\" 100%";

/// A runs folder: `alpha` (finished, run.json, a config, a checkpoint), `beta` (a NaN
/// loss, alerts.jsonl from a trainer), and a nested run with an odd name (finished:
/// training.svg newer than metrics.jsonl).
pub fn runs_tree(dir: &Path) {
    let fx = root().join("tests/fixtures/monitor");
    let alpha = dir.join("alpha");
    std::fs::create_dir_all(&alpha).unwrap();
    std::fs::copy(
        fx.join("plateau.trigger.jsonl"),
        alpha.join("metrics.jsonl"),
    )
    .unwrap();
    std::fs::write(
        alpha.join("run.json"),
        r#"{"format":1,"pid":1,"host":"test-host","started":1700000000,"updated":1700000100,"state":"finished","epoch":21,"epochs":21,"epoch_seconds":1.5,"config":"config.yaml"}"#,
    )
    .unwrap();
    std::fs::write(
        alpha.join("config.yaml"),
        "# <script>alert(1)</script>\ntraining:\n  epochs: 21\nmonitoring:\n  plateau_epochs: 20\n",
    )
    .unwrap();
    std::fs::copy(
        root().join("checkpoints/v5_11/best.pt"),
        alpha.join("best.pt"),
    )
    .unwrap();
    let beta = dir.join("beta");
    std::fs::create_dir_all(&beta).unwrap();
    std::fs::copy(
        fx.join("non-finite.trigger.jsonl"),
        beta.join("metrics.jsonl"),
    )
    .unwrap();
    std::fs::write(
        beta.join("alerts.jsonl"),
        "{\"severity\":\"info\",\"epoch\":0,\"rule\":\"trainer-note\",\"message\":\"<i>from the trainer</i>\",\"cause\":\"c\",\"fix\":\"f\",\"time\":1700000000}\nnot an alert\n",
    )
    .unwrap();
    let odd = dir.join(ODD);
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(
        fx.join("initial-coverage.trigger.jsonl"),
        odd.join("metrics.jsonl"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(odd.join("training.svg"), "<svg/>").unwrap();
}

/// JSON with the values that depend on when the test ran replaced.
pub fn stable(mut v: serde_json::Value, root_dir: &Path) -> String {
    fn walk(v: &mut serde_json::Value, root_dir: &str) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if matches!(k.as_str(), "updated" | "modified" | "time") && x.is_number() {
                        *x = "[time]".into();
                    } else if k == "root" {
                        *x = x
                            .as_str()
                            .map_or(x.clone(), |s| s.replace(root_dir, "[ROOT]").into());
                    } else {
                        walk(x, root_dir);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, root_dir)),
            _ => {}
        }
    }
    walk(&mut v, &root_dir.display().to_string());
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn api_answers_with_the_runs_their_curves_alerts_and_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let s = Served::start(d.path(), &[]);
    let runs = get_json(s.addr, "/api/runs");
    let names: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", ODD]);
    snap!("serve_api_runs", stable(runs.clone(), d.path()));
    snap!(
        "serve_api_alerts",
        stable(get_json(s.addr, "/api/alerts"), d.path())
    );
    snap!(
        "serve_api_metrics_beta",
        stable(get_json(s.addr, "/api/runs/beta/metrics"), d.path())
    );
    let detail = get_json(s.addr, "/api/runs/alpha");
    assert_eq!(detail["checkpoints"][0]["file"], "best.pt");
    assert_eq!(detail["checkpoints"][0]["version"], "v5.11");
    snap!("serve_api_run_alpha", stable(detail, d.path()));
    // The inspect data of a checkpoint is `tvck inspect --json --no-hash`'s.
    let inspected = get_json(s.addr, "/api/runs/alpha/checkpoints/best.pt");
    let o = common::tvck(
        &["inspect", "--json", "--no-hash", "best.pt"],
        &d.path().join("alpha"),
    );
    let cli: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(inspected, cli);
    // The odd name round-trips through percent-encoding.
    let m = get_json(s.addr, &format!("/api/runs/{}/metrics", enc(ODD)));
    assert_eq!(m["run"], ODD);
    assert_eq!(m["metrics"]["epochs"].as_array().unwrap().len(), 3);
}

#[test]
fn the_page_and_its_assets_are_embedded() {
    let d = tempfile::tempdir().unwrap();
    let s = Served::start(d.path(), &[]);
    let (status, head, body) = get(s.addr, "/");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    let page = String::from_utf8(body).unwrap();
    for asset in ["app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"] {
        assert!(page.contains(&format!("/assets/{asset}")), "{asset}");
        let (status, head, body) = get(s.addr, &format!("/assets/{asset}"));
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty() && head.contains("nosniff"));
    }
    // No address outside this server in the page or its script.
    let (_, _, js) = get(s.addr, "/assets/app.js");
    let js = String::from_utf8(js).unwrap();
    assert!(!js.contains("http://") && !js.contains("https://"));
    assert!(!js.contains("innerHTML"), "untrusted text is set as text");
    for api in ["/api/runs", "/api/alerts", "/api/events", "/metrics"] {
        assert!(js.contains(api), "{api}");
    }
    let (status, _, body) = get(s.addr, "/api/runs");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["runs"], serde_json::json!([]));
}

#[test]
fn requests_outside_the_api_are_refused() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    std::fs::write(d.path().join("secret.yaml"), "token: x\n").unwrap();
    let s = Served::start(d.path(), &[]);
    let host = format!("Host: {}\r\n", s.addr);
    let cases: Vec<(String, u16)> = vec![
        (
            "GET /api/runs/..%2F..%2Fetc/metrics HTTP/1.1\r\n".into(),
            404,
        ),
        (
            "GET /api/runs/alpha%2F..%2Fbeta/metrics HTTP/1.1\r\n".into(),
            404,
        ),
        (
            "GET /api/runs/alpha/checkpoints/..%2Fbeta%2Fmetrics.jsonl HTTP/1.1\r\n".into(),
            404,
        ),
        (
            "GET /api/runs/alpha/checkpoints/config.yaml HTTP/1.1\r\n".into(),
            404,
        ),
        (
            "GET /api/runs/alpha/checkpoints/%2Fetc%2Fpasswd HTTP/1.1\r\n".into(),
            404,
        ),
        ("GET /assets/../secret.yaml HTTP/1.1\r\n".into(), 404),
        ("GET /assets/..%2F..%2FCargo.toml HTTP/1.1\r\n".into(), 404),
        ("GET /secret.yaml HTTP/1.1\r\n".into(), 404),
        ("GET /api/runs/%ZZ HTTP/1.1\r\n".into(), 400),
        (
            "POST /api/runs HTTP/1.1\r\nContent-Length: 2\r\n".into(),
            413,
        ),
        ("DELETE /api/runs HTTP/1.1\r\n".into(), 405),
        ("GET http://evil/ HTTP/1.1\r\n".into(), 400),
        (
            format!(
                "GET /api/runs HTTP/1.1\r\nX-Big: {}\r\n",
                "a".repeat(20_000)
            ),
            431,
        ),
    ];
    for (head, want) in cases {
        let raw = format!("{head}{host}\r\n");
        let (status, resp, body) = request(s.addr, &raw);
        assert_eq!(status, want, "{head:.80}: {resp}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], want);
        assert!(!String::from_utf8_lossy(&body).contains("token"));
    }
    // A page of another site pointed at 127.0.0.1 (DNS rebinding) names its own host.
    let (status, _, _) = request(
        s.addr,
        "GET /api/runs HTTP/1.1\r\nHost: evil.example:80\r\n\r\n",
    );
    assert_eq!(status, 421);
    let (status, _, _) = request(s.addr, "GET /api/runs HTTP/1.0\r\n\r\n");
    assert_eq!(status, 421, "no Host");
    let (status, _, _) = request(s.addr, "GET /api/runs HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 200);
    // HEAD: the head only.
    let (status, head, body) = request(s.addr, &format!("HEAD /api/runs HTTP/1.1\r\n{host}\r\n"));
    assert_eq!(status, 200);
    assert!(
        body.is_empty() && head.contains("Content-Length: "),
        "{head}"
    );
    // A client that sends a partial head and nothing more does not hold the server: others
    // are answered meanwhile.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.write_all(b"GET /api/ru").unwrap();
    assert_eq!(get(s.addr, "/api/alerts").0, 200);
}

/// Read server-sent events from `stream` until `want` accepts one or `secs` pass.
pub fn wait_event(
    stream: &mut TcpStream,
    buf: &mut String,
    secs: u64,
    mut want: impl FnMut(&str, &serde_json::Value) -> bool,
) -> Option<(String, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for l in block.lines() {
                if let Some(e) = l.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            if event.is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&data).unwrap();
            if want(&event, &v) {
                return Some((event, v));
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => return None,
        }
    }
}

pub fn open_events(addr: SocketAddr, query: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /api/events{query} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = String::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while !buf.contains("\r\n\r\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the stream closed: {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let (head, rest) = buf.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let rest = rest.to_string();
    (s, rest)
}

#[test]
fn events_bring_each_appended_line_and_the_alert_it_raises() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let s = Served::start(d.path(), &[]);
    let seq = get_json(s.addr, "/api/runs")["seq"].as_u64().unwrap();
    let (mut es, mut buf) = open_events(s.addr, &format!("?since={seq}"));
    let metrics = d.path().join("alpha/metrics.jsonl");
    append(
        &metrics,
        "{\"epoch\":22,\"lr\":0.001,\"loss\":{\"total\":0.9},\"metrics\":{\"coverage\":0.97,\"Q\":0.31}}\n",
    );
    let (_, ev) = wait_event(&mut es, &mut buf, 10, |e, v| {
        e == "epoch" && v["run"] == "alpha"
    })
    .expect("the new line as an event");
    assert_eq!(ev["epoch"], 22);
    assert_eq!(ev["values"]["coverage"], 0.97);
    assert_eq!(ev["values"]["loss.total"], 0.9);
    // The run's summary follows.
    wait_event(&mut es, &mut buf, 10, |e, v| {
        e == "run" && v["name"] == "alpha" && v["epoch"] == 22
    })
    .expect("the summary");
    // A NaN loss: the epoch, then the alert.
    append(
        &metrics,
        "{\"epoch\":23,\"lr\":0.001,\"loss\":{\"total\":NaN},\"metrics\":{\"coverage\":0.97,\"Q\":0.31}}\n",
    );
    let (_, ev) = wait_event(&mut es, &mut buf, 10, |e, v| {
        e == "alerts" && v["run"] == "alpha"
    })
    .expect("the alert");
    let rules: Vec<&str> = ev["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"non-finite"), "{rules:?}");
    // The metrics now hold both lines; NaN is null.
    let m = get_json(s.addr, "/api/runs/alpha/metrics");
    let epochs = m["metrics"]["epochs"].as_array().unwrap();
    assert_eq!(epochs[epochs.len() - 2..], [22, 23]);
    assert_eq!(
        m["metrics"]["series"]["loss.total"]
            .as_array()
            .unwrap()
            .last(),
        Some(&serde_json::Value::Null)
    );
    // A stream that starts late gets what it missed after `since`.
    let (mut late, mut buf2) = open_events(s.addr, &format!("?since={seq}"));
    wait_event(&mut late, &mut buf2, 10, |e, v| {
        e == "epoch" && v["epoch"] == 22
    })
    .expect("replayed");
    // A new run folder appears in the list.
    let new = d.path().join("delta");
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("metrics.jsonl"), "{\"epoch\":0}\n").unwrap();
    wait_event(&mut es, &mut buf, 10, |e, v| {
        e == "run" && v["name"] == "delta"
    })
    .expect("the new run");
    // metrics.jsonl replaced by a new run: a restart.
    std::fs::write(d.path().join("beta/metrics.jsonl"), "{\"epoch\":0}\n").unwrap();
    wait_event(&mut es, &mut buf, 10, |e, v| {
        e == "restart" && v["run"] == "beta"
    })
    .expect("the restart");
}

#[test]
fn streams_are_capped() {
    let d = tempfile::tempdir().unwrap();
    let s = Served::start(d.path(), &[]);
    let open: Vec<_> = (0..16).map(|_| open_events(s.addr, "")).collect();
    let (status, _, _) = get(s.addr, "/api/events");
    assert_eq!(status, 503);
    drop(open);
    // Closed streams give their places back (noticed at their next write, the keep-alive).
    assert_eq!(get(s.addr, "/api/runs").0, 200);
}

/// Every file's name, size, modification time and content under `dir`.
pub fn tree_hash(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    files.sort();
    for p in files {
        let m = std::fs::symlink_metadata(&p).unwrap();
        h.update(p.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        h.update(m.len().to_le_bytes());
        h.update(format!("{:?}", m.modified().unwrap()).as_bytes());
        if m.is_file() {
            h.update(std::fs::read(&p).unwrap());
        }
    }
    hex::encode(h.finalize())
}

#[test]
fn serve_never_writes_in_the_runs_folder() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let before = tree_hash(d.path());
    {
        let s = Served::start(d.path(), &[]);
        for path in [
            "/",
            "/api/runs",
            "/api/alerts",
            "/api/runs/alpha",
            "/api/runs/alpha/metrics",
            "/api/runs/alpha/checkpoints/best.pt",
            "/api/runs/beta",
            &format!("/api/runs/{}", enc(ODD)),
        ] {
            assert_eq!(get(s.addr, path).0, 200, "{path}");
        }
        let (mut es, mut buf) = open_events(s.addr, "?since=0");
        // Two poll rounds and a walk for new runs happen while the stream is open.
        let _ = wait_event(&mut es, &mut buf, 3, |_, _| false);
    }
    assert_eq!(tree_hash(d.path()), before);
}

#[test]
fn serve_refuses_an_address_in_use() {
    let d = tempfile::tempdir().unwrap();
    let s = Served::start(d.path(), &[]);
    let port = s.addr.port().to_string();
    let o = common::tvck_within(&["serve", ".", "--port", &port], d.path(), 30).expect("exits");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: cannot listen on 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn alerts_file_settings_apply_to_the_dashboard_and_the_report() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let rules = d.path().join("alerts.yaml");
    std::fs::write(&rules, "monitoring:\n  disable: [plateau]\n").unwrap();
    let s = Served::start(d.path(), &["--alerts", rules.to_str().unwrap()]);
    let alerts = get_json(s.addr, "/api/alerts");
    let rules_seen: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert!(!rules_seen.contains(&"plateau"), "{rules_seen:?}");
    assert!(rules_seen.contains(&"non-finite"), "{rules_seen:?}");
    let out = d.path().join("r.html");
    let o = common::tvck(
        &[
            "report",
            "alpha",
            "-o",
            out.to_str().unwrap(),
            "--alerts",
            rules.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::run_text(&o, &[]));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        html.contains("id=\"no-alerts\""),
        "alpha's only alert was the plateau"
    );
    // A wrong value is a usage error that names the key.
    std::fs::write(&rules, "monitoring:\n  divergence_factor: -1\n").unwrap();
    let o = common::tvck_within(
        &[
            "serve",
            ".",
            "--port",
            "0",
            "--alerts",
            rules.to_str().unwrap(),
        ],
        d.path(),
        30,
    )
    .expect("refused at once");
    assert_eq!(o.status.code(), Some(2), "{}", common::run_text(&o, &[]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("divergence_factor"));
}

#[test]
fn a_stream_asking_for_events_that_are_not_kept_is_told_to_reload() {
    let d = tempfile::tempdir().unwrap();
    runs_tree(d.path());
    let s = Served::start(d.path(), &[]);
    let (mut es, mut buf) = open_events(s.addr, "?since=999999");
    let (event, data) = wait_event(&mut es, &mut buf, 10, |_, _| true).expect("an event");
    assert_eq!((event.as_str(), data), ("reset", serde_json::json!({})));
    // A reconnecting page's Last-Event-ID counts like `since`.
    let mut raw = TcpStream::connect(s.addr).unwrap();
    raw.write_all(
        format!(
            "GET /api/events HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: 999999\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    let (ev, _) = wait_event(&mut raw, &mut text, 10, |_, _| true).expect("an event");
    assert_eq!(ev, "reset");
}
