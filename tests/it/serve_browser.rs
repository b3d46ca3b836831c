//! `tvck serve`'s page in a real headless Chromium, driven over WebDriver (chromedriver;
//! a few JSON requests over std's TcpStream): the page loads with the runs, a curve gains
//! a point when a line is appended to metrics.jsonl, and the alert that line raises
//! appears. Screenshots are saved under the test's output folder
//! (`target/tmp/serve-browser/`) and checked: PNGs of the window's size that are not blank.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (scripts/test
//! installs them). Without them the test says why it did not run; with `CI` set it fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve_cli::{append, runs_tree, Served, ODD};

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = self.call("DELETE", &format!("/session/{s}"), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(bin: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run chromedriver");
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: None,
        };
        let start = Instant::now();
        while d.call("GET", "/status", None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    /// One WebDriver command; its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // Read the head, then the body its Content-Length (or chunks) gives: the driver
        // may keep the connection open.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let body_at = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a response head".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..body_at]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let have = buf.len() - body_at;
            let done = match length {
                Some(n) => have >= n,
                None if chunked => buf.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let rest = String::from_utf8_lossy(&buf[body_at..]).into_owned();
        let head = String::from_utf8_lossy(&buf[..body_at]).into_owned();
        let body = if chunked { dechunk(&rest) } else { rest };
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!("{head}: {}", v["value"]))
        }
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let s = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{s}{what}"), body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {what}: {e}"))
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": [] })),
        )
    }

    /// Run `js` until it returns true (or panic after `secs`, with `what` it was for).
    fn wait_for(&self, js: &str, secs: u64, what: &str) {
        let start = Instant::now();
        loop {
            if self.script(js) == Value::Bool(true) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs} s; the page shows {}",
                self.script("return document.body.innerText.slice(0, 2000)")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, to: &Path) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 text"));
        std::fs::write(to, &png).unwrap();
        png
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A PNG's width, height and its number of distinct colours (decoded whole: zlib, then
/// the five row filters).
fn png_facts(png: &[u8]) -> (u32, u32, usize) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let mut at = 8;
    let (mut w, mut h, mut depth, mut kind) = (0u32, 0u32, 0u8, 0u8);
    let mut idat = Vec::new();
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let ty = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match ty {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                depth = data[8];
                kind = data[9];
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    assert_eq!(depth, 8, "8-bit channels");
    let bpp = match kind {
        2 => 3,
        6 => 4,
        k => panic!("colour type {k}"),
    };
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w as usize * bpp;
    assert_eq!(
        raw.len(),
        h as usize * (stride + 1),
        "the image data is whole"
    );
    let mut prev = vec![0u8; stride];
    let mut colours = std::collections::HashSet::new();
    for row in raw.chunks(stride + 1) {
        let (f, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= bpp { cur[i - bpp] as i16 } else { 0 };
            let b = prev[i] as i16;
            let c = if i >= bpp { prev[i - bpp] as i16 } else { 0 };
            let pred = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            cur[i] = line[i].wrapping_add(pred as u8);
        }
        for px in cur.chunks(bpp) {
            if colours.len() < 10_000 {
                colours.insert(px.to_vec());
            }
        }
        prev = cur;
    }
    (w, h, colours.len())
}

#[test]
fn the_page_shows_new_epochs_and_alerts_live_in_chromium() {
    let (Some(chromium), Some(driver)) = (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) else {
        let why = "chromium and chromedriver are not installed (Debian: chromium chromium-driver; scripts/test installs them): the browser test did not run";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return;
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let d = tempfile::tempdir().unwrap();
    let runs = d.path().join("runs");
    runs_tree(&runs);
    let profile = d.path().join("profile");
    let served = Served::start(&runs, &[]);
    let mut wd = Driver::start(&driver);
    let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
        "binary": chromium.display().to_string(),
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--window-size=1280,900",
                 format!("--user-data-dir={}", profile.display())],
    }}}});
    let s = wd
        .call("POST", "/session", Some(&caps))
        .unwrap_or_else(|e| panic!("a Chromium session: {e}"));
    wd.session = Some(s["sessionId"].as_str().unwrap().to_string());
    wd.cmd("POST", "/url", Some(json!({ "url": served.url("/") })));
    wd.wait_for(
        "return document.body.dataset.ready === '1' && document.getElementById('conn').dataset.state === 'live'",
        60,
        "the page loads and its event stream opens",
    );
    // The runs, with the odd name shown as text, not markup.
    let names = wd.script(
        "return [...document.querySelectorAll('#runs tbody tr')].map(r => r.querySelector('button.name').textContent)",
    );
    assert_eq!(names, json!(["alpha", "beta", ODD]));
    assert_eq!(
        wd.script("return document.querySelectorAll('#runs b, #alerts i').length"),
        0
    );
    let points =
        "Number(document.querySelector('.chart[data-metric=\"coverage\"]').dataset.points)";
    let before = wd.script(&format!("return {points}")).as_u64().unwrap();
    assert!(before > 0, "the coverage curve is drawn");
    let alert_rows = "return [...document.querySelectorAll('#alerts tbody tr')].map(r => r.dataset.rule + '@' + r.dataset.run)";
    let alerts = wd.script(alert_rows);
    assert!(
        alerts
            .as_array()
            .unwrap()
            .contains(&json!("non-finite@beta")),
        "{alerts}"
    );
    assert!(!alerts.to_string().contains("coverage-drop"), "{alerts}");
    let size = wd.script(
        "return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]",
    );
    let loaded = wd.screenshot(&shots.join("loaded.png"));
    // A line lands: the curve gains a point and the alert it raises appears.
    append(
        &runs.join("alpha/metrics.jsonl"),
        "{\"epoch\":22,\"lr\":0.001,\"loss\":{\"total\":1.0},\"metrics\":{\"coverage\":0.5,\"Q\":0.29}}\n",
    );
    wd.wait_for(
        &format!("return {points} > {before}"),
        20,
        "the coverage curve gains the new point",
    );
    wd.wait_for(
        "return [...document.querySelectorAll('#alerts tbody tr')].some(r => r.dataset.rule === 'coverage-drop' && r.dataset.run === 'alpha')",
        20,
        "the coverage-drop alert appears",
    );
    assert_eq!(
        wd.script(
            "return document.querySelector('tr[data-run=\"alpha\"] td:nth-child(4)').textContent"
        ),
        "22/21"
    );
    let after = wd.screenshot(&shots.join("after-append.png"));
    // The run's page: its config and checkpoints.
    wd.script("document.querySelector('tr[data-run=\"alpha\"] button.name').click(); return true");
    wd.wait_for(
        "return !!document.querySelector('#detail tr[data-file=\"best.pt\"]')",
        30,
        "the run's checkpoints",
    );
    let detail = wd.script("return document.getElementById('detail').innerText");
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains("v5.11") && detail.contains("config.yaml"),
        "{detail}"
    );
    assert!(
        detail.contains("<script>alert(1)</script>"),
        "the config is shown as text"
    );
    let run_page = wd.screenshot(&shots.join("run-page.png"));
    let (w, h) = (
        size[0].as_f64().unwrap() as u32,
        size[1].as_f64().unwrap() as u32,
    );
    for (name, png) in [
        ("loaded", &loaded),
        ("after-append", &after),
        ("run-page", &run_page),
    ] {
        let (pw, ph, colours) = png_facts(png);
        assert_eq!((pw, ph), (w, h), "{name}.png has the window's size");
        assert!(colours > 16, "{name}.png is not blank ({colours} colours)");
    }
    assert_ne!(loaded, after, "the screen changed with the new epoch");
    eprintln!("screenshots in {}", shots.display());
}
