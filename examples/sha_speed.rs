//! Single-core SHA-256 throughput of the sha2 crate on this machine, in MB/s: the
//! reference the `scan --hash` benchmark compares against (scripts/bench).

use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let buf: Vec<u8> = (0..mb << 20).map(|i| (i * 31 % 251) as u8).collect();
    let _ = Sha256::digest(&buf[..1 << 20]); // warm up
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(Sha256::digest(&buf));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{:.1}", buf.len() as f64 / best / 1e6);
}
