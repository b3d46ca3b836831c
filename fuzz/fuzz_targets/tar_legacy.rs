//! Any bytes into the tar reader (`tvck::format::tar::tar_archive`: ustar, GNU long names,
//! PAX records) and the legacy tar checkpoint reader on top of it, read lazily through a
//! fixed window as a file would be: never panic, hang or over-allocate.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvck::format::input::Whole;

fuzz_target!(|data: &[u8]| {
    if let Ok(archive) = tvck::format::tar::tar_archive(&mut Whole(data)) {
        for m in &archive.members {
            // A member's header was read whole, so its data starts inside the input
            // (its data may run past the end).
            assert!(m.data <= data.len() as u64);
        }
    }
    let _ = tvck::format::torch::read_tar(data);
});
