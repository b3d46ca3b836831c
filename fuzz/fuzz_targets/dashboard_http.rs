//! `tvck serve`'s request parsing on any bytes: the request head (request line, headers,
//! percent-decoded path segments, limits), its query parameter and Host check, and the
//! encoding of the decoded segments back into a path. A request or a refusal, never a
//! panic; an encoded segment decodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvck::dashboard::http;

fuzz_target!(|data: &[u8]| {
    match http::parse_head(data) {
        Ok(req) => {
            let _ = req.param("since");
            let _ = req.header("host").map(http::loopback_host);
            for s in &req.segments {
                let back = http::percent_decode(&http::percent_encode(s));
                assert_eq!(back.as_deref(), Some(s.as_str()));
            }
        }
        Err(r) => assert!((400..600).contains(&r.status)),
    }
});
