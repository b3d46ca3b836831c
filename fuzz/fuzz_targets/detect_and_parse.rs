//! Any bytes through format detection and the matching parser, then every tensor's
//! logical bytes: must return Ok or Err, never panic, hang or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ckpt) = tvck::format::Checkpoint::from_bytes("fuzz", data.to_vec()) {
        for i in 0..ckpt.tensors.len() {
            let _ = ckpt.tensor_bytes(i);
        }
        let _ = ckpt.model_state();
    }
});
