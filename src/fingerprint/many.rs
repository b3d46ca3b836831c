//! SHA-256 of many messages at once.
//!
//! SHA-256 is sequential within a message, so one tensor cannot be hashed faster than one
//! core's SHA unit (the sha2 crate uses the SHA-NI instructions where the CPU has them).
//! A checkpoint tree, though, is thousands of independent messages. On x86-64 CPUs with
//! AVX-512 this module hashes 16 of them side by side, one per 32-bit lane of a 512-bit
//! register ("multi-buffer" hashing, as in Intel's isa-l_crypto). On the benchmark machine
//! that is about twice the SHA-NI throughput of a core (docs/benchmarks.md).
//!
//! Scheduling: messages go longest first into free lanes; a lane whose message runs out
//! of whole 64-byte blocks hands its state to the scalar code, which adds the last partial
//! block and the padding, and the lane takes the next message. Once the queue is empty
//! and fewer than [`MIN_LANES`] lanes are busy, a 16-lane step would mostly hash padding,
//! so the remaining blocks of each message go through sha2's compression function instead.
//! Without AVX-512, or with `TVCK_HASH_ENGINE=sha2` in the environment (for benchmarks),
//! every message goes through the sha2 crate. Either way the digests are the standard
//! SHA-256 of each message; the tests compare them with the sha2 crate's.

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

use super::Hash;

/// With fewer busy lanes than this, the sha2 crate finishes the work: one 16-lane block
/// step costs about as much as 7.5 SHA-NI blocks on the benchmark machine.
pub const MIN_LANES: usize = 8;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// How the digests are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One message at a time with the sha2 crate (SHA-NI where present).
    Sha2,
    /// 16 messages at a time with AVX-512, the stragglers with the sha2 crate.
    Avx512,
}

impl Engine {
    /// The best engine this CPU supports, unless `TVCK_HASH_ENGINE=sha2` asks for the
    /// plain one. Detected once per process.
    pub fn detect() -> Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        *ENGINE.get_or_init(|| {
            let forced_sha2 = std::env::var("TVCK_HASH_ENGINE").is_ok_and(|v| v == "sha2");
            if !forced_sha2 && avx512_available() {
                Engine::Avx512
            } else {
                Engine::Sha2
            }
        })
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sha2 => "sha2",
            Engine::Avx512 => "avx512x16",
        }
    }
}

/// Whether the AVX-512 engine can run on this CPU.
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// SHA-256 of every message, in order, with the best engine of this CPU.
pub fn sha256_many(msgs: &[&[u8]]) -> Vec<Hash> {
    sha256_many_with(Engine::detect(), msgs)
}

/// [`sha256_many`] with a chosen engine. `Engine::Avx512` on a CPU without AVX-512 falls
/// back to the sha2 crate.
pub fn sha256_many_with(engine: Engine, msgs: &[&[u8]]) -> Vec<Hash> {
    #[cfg(target_arch = "x86_64")]
    if engine == Engine::Avx512 && avx512_available() {
        return x16::hash_all(msgs, MIN_LANES);
    }
    let _ = engine;
    msgs.iter().map(|m| Sha256::digest(m).into()).collect()
}

/// Run `blocks` (whole 64-byte blocks) through the compression function.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % 64, 0);
    // SAFETY: GenericArray<u8, U64> is a #[repr(transparent)] wrapper of 64 bytes with
    // alignment 1 (generic-array's own `from_slice` relies on the same layout), and
    // `blocks` holds exactly len / 64 of them.
    let blocks: &[GenericArray<u8, U64>] = unsafe {
        std::slice::from_raw_parts(
            blocks.as_ptr().cast::<GenericArray<u8, U64>>(),
            blocks.len() / 64,
        )
    };
    sha2::compress256(state, blocks);
}

/// Finish a message whose first `done` bytes (a multiple of 64) are in `state`.
fn finish(mut state: [u32; 8], msg: &[u8], done: usize) -> Hash {
    let whole = msg.len() / 64 * 64;
    compress(&mut state, &msg[done..whole]);
    let tail = &msg[whole..];
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let n = if tail.len() < 56 { 64 } else { 128 };
    last[n - 8..n].copy_from_slice(&((msg.len() as u64).wrapping_mul(8)).to_be_bytes());
    compress(&mut state, &last[..n]);
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x16 {
    use super::{finish, Hash, H0};
    use std::arch::x86_64::*;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// What an idle lane reads: any 64 bytes do, its result is discarded.
    static IDLE: [u8; 64] = [0; 64];

    /// The 16 lanes' states: `words[j][i]` is word `j` of lane `i`.
    struct States {
        words: [[u32; 16]; 8],
    }

    impl States {
        fn set(&mut self, lane: usize, s: [u32; 8]) {
            for (j, w) in s.into_iter().enumerate() {
                self.words[j][lane] = w;
            }
        }
        fn get(&self, lane: usize) -> [u32; 8] {
            std::array::from_fn(|j| self.words[j][lane])
        }
    }

    /// A message in a lane: its index, and the whole blocks hashed so far.
    #[derive(Clone, Copy)]
    struct Busy {
        msg: usize,
        done: usize,
    }

    /// Hash every message: 16 lanes while at least `min_lanes` are busy, sha2 after.
    pub(super) fn hash_all(msgs: &[&[u8]], min_lanes: usize) -> Vec<Hash> {
        let mut out = vec![[0u8; 32]; msgs.len()];
        // Longest first, so the lanes run out at about the same time.
        let mut queue: Vec<usize> = (0..msgs.len()).collect();
        queue.sort_by_key(|&i| std::cmp::Reverse(msgs[i].len()));
        let mut queue = queue.into_iter().peekable();
        let mut lanes: [Option<Busy>; 16] = [None; 16];
        let mut states = States {
            words: [[0; 16]; 8],
        };
        loop {
            // Fill free lanes; messages shorter than a block need no lane.
            for (lane, slot) in lanes.iter_mut().enumerate() {
                while slot.is_none() {
                    let Some(m) = queue.next() else { break };
                    if msgs[m].len() < 64 {
                        out[m] = finish(H0, msgs[m], 0);
                    } else {
                        *slot = Some(Busy { msg: m, done: 0 });
                        states.set(lane, H0);
                    }
                }
            }
            let busy = lanes.iter().flatten().count();
            if busy == 0 {
                break;
            }
            if busy < min_lanes && queue.peek().is_none() {
                for (lane, slot) in lanes.iter().enumerate() {
                    if let Some(b) = slot {
                        out[b.msg] = finish(states.get(lane), msgs[b.msg], b.done);
                    }
                }
                break;
            }
            // Run every busy lane for as many blocks as the shortest one has left.
            let steps = lanes
                .iter()
                .flatten()
                .map(|b| msgs[b.msg].len() / 64 - b.done / 64)
                .min()
                .unwrap_or(0);
            let mut starts = [IDLE.as_ptr(); 16];
            let mut strides = [0usize; 16];
            for (lane, slot) in lanes.iter().enumerate() {
                if let Some(b) = slot {
                    // In bounds: `steps` whole blocks remain after `done` in this message.
                    starts[lane] = msgs[b.msg][b.done..].as_ptr();
                    strides[lane] = 64;
                }
            }
            // SAFETY: AVX-512F/BW are present (checked by the caller); every busy lane has
            // `steps` whole blocks readable from its start, and idle lanes re-read IDLE.
            unsafe { compress16(&mut states.words, &starts, &strides, steps) };
            for (lane, slot) in lanes.iter_mut().enumerate() {
                if let Some(b) = slot {
                    b.done += steps * 64;
                    if msgs[b.msg].len() - b.done < 64 {
                        out[b.msg] = finish(states.get(lane), msgs[b.msg], b.done);
                        *slot = None;
                    }
                }
            }
        }
        out
    }

    /// Run `steps` blocks through 16 lanes. Lane `i` reads block `k` at
    /// `starts[i] + k * strides[i]`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512BW, and for every lane the `steps` blocks it reads
    /// are in bounds of one allocation.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn compress16(
        words: &mut [[u32; 16]; 8],
        starts: &[*const u8; 16],
        strides: &[usize; 16],
        steps: usize,
    ) {
        let bswap = _mm512_broadcast_i32x4(_mm_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
        ));
        let mut state: [__m512i; 8] =
            std::array::from_fn(|j| _mm512_loadu_si512(words[j].as_ptr().cast()));
        let mut ptrs = *starts;
        for _ in 0..steps {
            let rows: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(ptrs[i].cast()));
            for (p, s) in ptrs.iter_mut().zip(strides) {
                *p = p.wrapping_add(*s);
            }
            let t = transpose(rows);
            let mut w: [__m512i; 16] = std::array::from_fn(|i| _mm512_shuffle_epi8(t[i], bswap));
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
            macro_rules! round {
                ($k:expr, $w:expr) => {{
                    let s1 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<6>(e),
                        _mm512_ror_epi32::<11>(e),
                        _mm512_ror_epi32::<25>(e),
                    );
                    // ch = e ? f : g; maj = majority(a, b, c).
                    let ch = _mm512_ternarylogic_epi32::<0xCA>(e, f, g);
                    let kw = _mm512_add_epi32(_mm512_set1_epi32($k as i32), $w);
                    let t1 = _mm512_add_epi32(_mm512_add_epi32(h, s1), _mm512_add_epi32(ch, kw));
                    let s0 = _mm512_ternarylogic_epi32::<0x96>(
                        _mm512_ror_epi32::<2>(a),
                        _mm512_ror_epi32::<13>(a),
                        _mm512_ror_epi32::<22>(a),
                    );
                    let maj = _mm512_ternarylogic_epi32::<0xE8>(a, b, c);
                    h = g;
                    g = f;
                    f = e;
                    e = _mm512_add_epi32(d, t1);
                    d = c;
                    c = b;
                    b = a;
                    a = _mm512_add_epi32(t1, _mm512_add_epi32(s0, maj));
                }};
            }
            for (t, k) in K.iter().enumerate().take(16) {
                round!(*k, w[t]);
            }
            for (t, k) in K.iter().enumerate().skip(16) {
                let w15 = w[(t - 15) & 15];
                let w2 = w[(t - 2) & 15];
                let s0 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<7>(w15),
                    _mm512_ror_epi32::<18>(w15),
                    _mm512_srli_epi32::<3>(w15),
                );
                let s1 = _mm512_ternarylogic_epi32::<0x96>(
                    _mm512_ror_epi32::<17>(w2),
                    _mm512_ror_epi32::<19>(w2),
                    _mm512_srli_epi32::<10>(w2),
                );
                let nw = _mm512_add_epi32(
                    _mm512_add_epi32(w[t & 15], s0),
                    _mm512_add_epi32(w[(t - 7) & 15], s1),
                );
                w[t & 15] = nw;
                round!(*k, nw);
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm512_add_epi32(*s, v);
            }
        }
        for (j, s) in state.iter().enumerate() {
            _mm512_storeu_si512(words[j].as_mut_ptr().cast(), *s);
        }
    }

    /// 16×16 transpose of 32-bit words: row `i` (lane `i`'s block) becomes element `i`
    /// of every output vector, output `t` holding message word `t`.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
        let z = _mm512_setzero_si512();
        let mut t = [z; 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [z; 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        let mut v = [z; 16];
        for i in 0..2 {
            for j in 0..4 {
                let (x, y) = (u[8 * i + j], u[8 * i + 4 + j]);
                v[8 * i + j] = _mm512_shuffle_i32x4::<0x88>(x, y);
                v[8 * i + 4 + j] = _mm512_shuffle_i32x4::<0xDD>(x, y);
            }
        }
        let mut o = [z; 16];
        for j in 0..8 {
            o[j] = _mm512_shuffle_i32x4::<0x88>(v[j], v[8 + j]);
            o[8 + j] = _mm512_shuffle_i32x4::<0xDD>(v[j], v[8 + j]);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha2_all(msgs: &[&[u8]]) -> Vec<Hash> {
        msgs.iter().map(|m| Sha256::digest(m).into()).collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_match_sha2_at_every_lane_count() {
        if !avx512_available() {
            // Nothing of this engine can run here; what can be checked is that it is
            // never chosen (the sha2 path is tested below).
            assert_eq!(Engine::detect(), Engine::Sha2);
            eprintln!("no AVX-512 on this CPU: the 16-lane engine is not used here");
            return;
        }
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // Lengths around every block boundary, including 55/56 (padding spills) and 0.
        let lens = [
            0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 65_537,
        ];
        for n in 1..=40 {
            let msgs: Vec<&[u8]> = (0..n)
                .map(|i| {
                    let len = lens[(i * 7) % lens.len()];
                    &data[i..i + len]
                })
                .collect();
            // min_lanes = 1 keeps the 16-lane engine on to the last block.
            assert_eq!(
                x16::hash_all(&msgs, 1),
                sha2_all(&msgs),
                "{n} messages, all lanes"
            );
            assert_eq!(x16::hash_all(&msgs, 8), sha2_all(&msgs), "{n} messages");
            assert_eq!(
                x16::hash_all(&msgs, 17),
                sha2_all(&msgs),
                "{n} messages, no lanes"
            );
        }
    }

    #[test]
    fn finish_pads_like_sha2() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        for len in 0..300 {
            let msg = &data[..len];
            let expect: Hash = Sha256::digest(msg).into();
            assert_eq!(finish(H0, msg, 0), expect, "length {len}");
            // Resuming after whole blocks already hashed.
            let mut st = H0;
            let whole = len / 64 * 64;
            compress(&mut st, &msg[..whole]);
            assert_eq!(finish(st, msg, whole), expect, "length {len}, resumed");
        }
    }

    #[test]
    fn engines_agree_on_the_sample_checkpoints() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");
        let c = crate::format::Checkpoint::open(root.join("v5_11/best.pt")).unwrap();
        let bytes: Vec<_> = (0..c.tensors.len())
            .map(|i| c.tensor_bytes(i).unwrap())
            .collect();
        let msgs: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        let expect = sha2_all(&msgs);
        assert!(msgs.len() > 16, "enough tensors to fill the lanes");
        assert_eq!(sha256_many_with(Engine::Sha2, &msgs), expect);
        assert_eq!(sha256_many_with(Engine::Avx512, &msgs), expect);
        assert_eq!(sha256_many(&msgs), expect);
    }

    #[test]
    fn detect_names_an_engine_this_cpu_runs() {
        let e = Engine::detect();
        assert!(e == Engine::Sha2 || avx512_available());
        assert!(["sha2", "avx512x16"].contains(&e.name()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_messages_hash_like_sha2(
            lens in proptest::collection::vec(0usize..3000, 0..48),
            seed in any::<u8>(),
        ) {
            let total: usize = lens.iter().sum();
            let data: Vec<u8> = (0..total).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let mut msgs = Vec::new();
            let mut at = 0;
            for l in &lens {
                msgs.push(&data[at..at + l]);
                at += l;
            }
            prop_assert_eq!(sha256_many_with(Engine::Avx512, &msgs), sha2_all(&msgs));
        }
    }
}
