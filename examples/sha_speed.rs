//! Single-core SHA-256 throughput on this machine, in MB/s: the reference the
//! `scan --hash` benchmark compares against (scripts/bench).
//!
//! `sha_speed [MB]` times the sha2 crate on one buffer; `sha_speed [MB] --many` times
//! tvck's engine (`fingerprint::many`) on 16 equal messages and prints its name too.

use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mb: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(256);
    let many = args.iter().any(|a| a == "--many");
    let buf: Vec<u8> = (0..mb << 20).map(|i| (i * 31 % 251) as u8).collect();
    let parts: Vec<&[u8]> = buf.chunks(buf.len().div_ceil(16)).collect();
    let run = || {
        if many {
            std::hint::black_box(tvck::fingerprint::many::sha256_many(&parts));
        } else {
            std::hint::black_box(Sha256::digest(&buf));
        }
    };
    let _ = Sha256::digest(&buf[..1 << 20]); // warm up
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mbs = buf.len() as f64 / best / 1e6;
    if many {
        let engine = tvck::fingerprint::many::Engine::detect().name();
        println!("{mbs:.1} {engine}");
    } else {
        println!("{mbs:.1}");
    }
}
