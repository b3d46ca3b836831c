//! Sending alerts out: to a command (the alert as one JSON object on its stdin) and to an
//! HTTP webhook (a JSON POST). The webhook client is a small HTTP/1.1 client over
//! `std::net` for `http://` URLs; `https://` is not supported (point the webhook at a
//! local relay, or use `--alert-cmd` with `curl`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::alert::Alert;

/// How long a command or a webhook may take per alert.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an alert could not be delivered (never fatal to a run).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("alert command `{cmd}` could not start: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("alert command `{cmd}` failed: {status}")]
    CommandFailed { cmd: String, status: String },
    #[error("alert command `{cmd}` did not finish within {}s and was killed", TIMEOUT.as_secs())]
    CommandTimeout { cmd: String },
    #[error("webhook URL `{url}`: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error("webhook {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("webhook {url} answered `{status}`")]
    Status { url: String, status: String },
}

impl DeliveryError {
    pub fn hint(&self) -> &'static str {
        match self {
            DeliveryError::Spawn { .. } | DeliveryError::CommandFailed { .. } => {
                "the command runs through `sh -c` with the alert as JSON on stdin; try it by hand: echo '{}' | CMD"
            }
            DeliveryError::CommandTimeout { .. } => {
                "the command must read stdin and exit; run slow work in the background"
            }
            DeliveryError::BadUrl { .. } => {
                "give an http://HOST[:PORT]/PATH URL (https is not supported: use a local relay or an alert command running curl)"
            }
            DeliveryError::Http { .. } | DeliveryError::Status { .. } => {
                "check that the webhook receiver is up and accepts a JSON POST"
            }
        }
    }
}

/// Where alerts go besides alerts.jsonl and the terminal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// A shell command line.
    pub command: Option<String>,
    /// An `http://` URL.
    pub webhook: Option<String>,
}

impl Delivery {
    /// Whether anything is configured.
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.webhook.is_none()
    }

    /// Check the webhook URL before a run starts.
    pub fn validate(&self) -> Result<(), DeliveryError> {
        if let Some(u) = &self.webhook {
            parse_url(u)?;
        }
        Ok(())
    }

    /// Send one alert everywhere configured; the failures (each target is tried).
    pub fn send(&self, alert: &Alert) -> Vec<DeliveryError> {
        let body = serde_json::to_string(alert).unwrap_or_default();
        let mut errors = Vec::new();
        if let Some(c) = &self.command {
            if let Err(e) = run_command(c, &body) {
                errors.push(e);
            }
        }
        if let Some(u) = &self.webhook {
            if let Err(e) = post_json(u, &body) {
                errors.push(e);
            }
        }
        errors
    }
}

/// Run `cmd` through `sh -c` with `stdin` as its standard input; killed after [`TIMEOUT`].
pub fn run_command(cmd: &str, stdin: &str) -> Result<(), DeliveryError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| DeliveryError::Spawn {
            cmd: cmd.into(),
            source,
        })?;
    if let Some(mut i) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = i
            .write_all(stdin.as_bytes())
            .and_then(|_| i.write_all(b"\n"));
    }
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => {
                return Err(DeliveryError::CommandFailed {
                    cmd: cmd.into(),
                    status: s.to_string(),
                })
            }
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeliveryError::CommandTimeout { cmd: cmd.into() });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                return Err(DeliveryError::Spawn {
                    cmd: cmd.into(),
                    source,
                })
            }
        }
    }
}

/// `http://host[:port][/path]` → (host, port, path).
fn parse_url(url: &str) -> Result<(String, u16, String), DeliveryError> {
    let bad = |why| DeliveryError::BadUrl {
        url: url.into(),
        why,
    };
    if url.starts_with("https://") {
        return Err(bad("https is not supported"));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("no host (user:password@ is not supported)"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))?,
        ),
        _ => (authority, 80),
    };
    if path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("the path has spaces or control characters"));
    }
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        port,
        path.to_string(),
    ))
}

/// POST `body` (JSON) to an `http://` URL; a 2xx answer is success.
pub fn post_json(url: &str, body: &str) -> Result<(), DeliveryError> {
    let (host, port, path) = parse_url(url)?;
    let http = |source| DeliveryError::Http {
        url: url.into(),
        source,
    };
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(http)?
        .next()
        .ok_or_else(|| {
            http(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host resolves to no address",
            ))
        })?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(http)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(http)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(http)?;
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: tvck/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(http)?;
    // The status line is all that matters.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = s.read(&mut buf).map_err(http)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().trim().to_string();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(DeliveryError::Status {
            url: url.into(),
            status: crate::report::safe::value(&status).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/hook?x=1").unwrap(),
            ("127.0.0.1".into(), 8080, "/hook?x=1".into())
        );
        assert_eq!(
            parse_url("http://example.org").unwrap(),
            ("example.org".into(), 80, "/".into())
        );
        assert_eq!(parse_url("http://[::1]:9/").unwrap().0, "::1");
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://u:p@x/",
            "http://x:y/",
            "http://x/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let e = parse_url("https://hooks.example/").unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
    }

    /// A one-request HTTP server on 127.0.0.1: the request it got (head, body).
    fn listener(answer: &'static str) -> (String, std::thread::JoinHandle<(String, String)>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/tvck", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    if req.len() >= i + 4 + len {
                        s.write_all(answer.as_bytes()).unwrap();
                        return (text[..i].to_string(), text[i + 4..].to_string());
                    }
                }
                if n == 0 {
                    panic!("connection closed early");
                }
            }
        });
        (url, h)
    }

    fn alert() -> Alert {
        let mut a = Alert::new(
            super::super::Severity::Critical,
            0,
            "initial-coverage",
            "initial coverage 2.97%",
            "c",
            "f",
        );
        a.run = Some("run-1".into());
        a
    }

    #[test]
    fn webhook_posts_the_alert_as_json() {
        let (url, h) = listener("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        let d = Delivery {
            command: None,
            webhook: Some(url.clone()),
        };
        d.validate().unwrap();
        let errors = d.send(&alert());
        assert!(errors.is_empty(), "{errors:?}");
        let (head, body) = h.join().unwrap();
        assert!(head.starts_with("POST /hooks/tvck HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let got: Alert = serde_json::from_str(&body).unwrap();
        assert_eq!(got, alert());
    }

    #[test]
    fn webhook_errors_are_reported() {
        let (url, h) = listener("HTTP/1.1 500 Internal Server Error\r\n\r\n");
        let e = post_json(&url, "{}").unwrap_err();
        h.join().unwrap();
        assert!(
            e.to_string()
                .ends_with("answered `HTTP/1.1 500 Internal Server Error`"),
            "{e}"
        );
        // Nobody listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        assert!(matches!(
            post_json(&url, "{}"),
            Err(DeliveryError::Http { .. })
        ));
    }

    #[test]
    fn command_gets_the_alert_on_stdin() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("got.json");
        let del = Delivery {
            command: Some(format!("cat > '{}'", out.display())),
            webhook: None,
        };
        assert!(del.send(&alert()).is_empty());
        let got: Alert = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got, alert());
        let e = run_command("exit 3", "{}").unwrap_err();
        assert!(e.to_string().contains("failed: exit status: 3"), "{e}");
        // A command that ignores its input is fine.
        run_command("true", &"x".repeat(1 << 20)).unwrap();
    }
}
