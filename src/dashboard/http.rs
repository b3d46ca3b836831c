//! The little HTTP/1.1 the dashboard speaks, over `std::net`: a `GET` or `HEAD` request
//! head of bounded size read within a time limit, no request bodies, one response per
//! connection (`Connection: close`), and the security headers every response carries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A request head (request line and headers) larger than this is refused (431).
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers per request at most.
pub const MAX_HEADERS: usize = 64;
/// The whole head must arrive within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded segment by segment (`/api/runs/a%2Fb/metrics` →
    /// `["api", "runs", "a/b", "metrics"]`).
    pub segments: Vec<String>,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's raw value.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v)).flatten()
        })
    }
}

/// Why a request was refused before routing: the status and a short text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (`+` stays `+`); `None` when an escape is bad or the result not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encode a path segment (what `encodeURIComponent` leaves alone stays).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parse a request head (the bytes before the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "the request is not text"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "a bad request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(refuse(505, "only HTTP/1.x is spoken here"));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(refuse(431, "too many headers"));
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(refuse(400, "a bad header line"));
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(refuse(400, "a bad header name"));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    if !target.starts_with('/') {
        return Err(refuse(400, "the request target is not a path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s).ok_or_else(|| refuse(400, "a bad escape in the path")))
        .collect::<Result<Vec<_>, _>>()?;
    let req = Request {
        method: method.to_string(),
        segments,
        query,
        headers,
    };
    if req.header("transfer-encoding").is_some()
        || req
            .header("content-length")
            .is_some_and(|l| l.trim() != "0")
    {
        return Err(refuse(413, "this server takes no request bodies"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(refuse(405, "only GET and HEAD"));
    }
    Ok(req)
}

/// Read a request head from `stream`: at most [`MAX_HEAD`] bytes, within
/// [`HEAD_TIMEOUT`]. `Ok(None)` when the peer closed before sending anything.
pub fn read_head(stream: &mut TcpStream) -> Result<Option<Request>, Refusal> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = HEAD_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(refuse(408, "the request head took too long"));
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(refuse(400, "the request head ended early")),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(refuse(408, "the request head took too long"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(None),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + end;
            if end > MAX_HEAD {
                return Err(refuse(431, "the request head is too large"));
            }
            return parse_head(&buf[..end]).map(Some);
        }
        if buf.len() > MAX_HEAD {
            return Err(refuse(431, "the request head is too large"));
        }
    }
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The headers every response carries: nothing cached, nothing sniffed, no framing, and
/// a policy that lets the page load only its own scripts, styles and API.
pub const SECURITY_HEADERS: &str = "Cache-Control: no-store\r\n\
X-Content-Type-Options: nosniff\r\n\
X-Frame-Options: DENY\r\n\
Referrer-Policy: no-referrer\r\n\
Cross-Origin-Resource-Policy: same-origin\r\n\
Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub allow: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            allow: false,
        }
    }

    /// A JSON body.
    pub fn json(value: &impl serde::Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(b) => Response::new(200, "application/json", b),
            Err(_) => Response::error(500, "cannot encode JSON"),
        }
    }

    /// An error as JSON: `{"error": MESSAGE, "status": N}`.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message, "status": status }).to_string();
        let mut r = Response::new(status, "application/json", body);
        r.allow = status == 405;
        r
    }

    /// Write it (the body left out for `HEAD`).
    pub fn write(&self, out: &mut impl Write, head_only: bool) -> std::io::Result<()> {
        let mut h = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{SECURITY_HEADERS}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            h.push_str("Allow: GET, HEAD\r\n");
        }
        h.push_str("\r\n");
        out.write_all(h.as_bytes())?;
        if !head_only {
            out.write_all(&self.body)?;
        }
        out.flush()
    }
}

/// The head of a server-sent events response.
pub fn sse_head() -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nX-Accel-Buffering: no\r\n{SECURITY_HEADERS}\r\n"
    )
}

/// One server-sent event (`data` is one line of JSON: it holds no newline).
pub fn sse_event(id: u64, event: &str, data: &str) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.0.0.1`,
/// `[::1]`, with any port): a page of another site that a DNS rebinding points at
/// 127.0.0.1 sends its own name instead.
pub fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((n, p)) if p.is_empty() || p.starts_with(':') => n,
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes_segments() {
        let r =
            parse_head(b"GET /api/runs/a%2Fb/metrics?since=4&x HTTP/1.1\r\nHost: localhost:1\r\n")
                .unwrap();
        assert_eq!(r.segments, ["api", "runs", "a/b", "metrics"]);
        assert_eq!(r.param("since").as_deref(), Some("4"));
        assert_eq!(r.param("x").as_deref(), Some(""));
        assert_eq!(r.header("HOST"), Some("localhost:1"));
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn refuses_what_it_does_not_speak() {
        for (head, status) in [
            (&b"POST / HTTP/1.1\r\n"[..], 405),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n", 413),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 413),
            (b"GET / HTTP/2\r\n", 505),
            (b"GET  / HTTP/1.1\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\n", 400),
            (b"GET /%zz HTTP/1.1\r\n", 400),
            (b"GET /%ff HTTP/1.1\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n", 400),
            (b"\xff\xfe", 400),
        ] {
            assert_eq!(parse_head(head).unwrap_err().status, status, "{head:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}").as_bytes())
                .unwrap_err()
                .status,
            431
        );
    }

    proptest::proptest! {
        #[test]
        fn any_head_is_a_request_or_a_refusal(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            match parse_head(&data) {
                Ok(r) => proptest::prop_assert!(r.method == "GET" || r.method == "HEAD"),
                Err(r) => proptest::prop_assert!((400..600).contains(&r.status)),
            }
        }

        #[test]
        fn segments_round_trip(s in "\\PC*") {
            proptest::prop_assert_eq!(percent_decode(&percent_encode(&s)), Some(s.clone()));
            let head = format!("GET /api/runs/{}/metrics HTTP/1.1\r\n", percent_encode(&s));
            let r = parse_head(head.as_bytes()).unwrap();
            if !s.is_empty() {
                proptest::prop_assert_eq!(&r.segments[2], &s);
            }
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "a.localhost",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "[::1]x",
            "10.0.0.1",
            "",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
