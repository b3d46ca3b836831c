//! The comment-preserving YAML editor on any text: the line scanner, then one edit taken
//! from the input (`path=value` on its first line) applied to the rest and diffed. An
//! edit or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (edit, doc) = text.split_once('\n').unwrap_or(("frozen_checkpoint.path=x", text));
    let _ = tvck::yamledit::scan(doc);
    let (path, value) = edit.split_once('=').unwrap_or((edit, ""));
    if let Ok(new) = tvck::yamledit::set_scalar(doc, path, value) {
        let _ = tvck::yamledit::unified_diff(doc, &new, "a", "b");
        let _ = tvck::yamledit::scan(&new);
    }
});
