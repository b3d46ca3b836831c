//! Process-wide tuning of the platform: page and allocator policy (docs/benchmarks.md).

/// No transparent huge pages for this process's heap (all commands but the trainer's):
/// mimalloc would back its arenas with 2 MB pages that the kernel zeroes whole, for a few
/// kB of pickle nodes per file (5× the resident memory of a scan, and no faster).
#[cfg(target_os = "linux")]
pub fn no_huge_pages() {
    extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_THP_DISABLE: i32 = 41;
    // SAFETY: prctl(PR_SET_THP_DISABLE) only changes this process's paging policy; a
    // failure (old kernel) leaves the default, which is also correct.
    unsafe {
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn no_huge_pages() {}

/// glibc's malloc returns freed blocks above its trim threshold to the kernel and maps
/// large ones fresh; the trainer frees and re-allocates the same activation buffers every
/// batch, so each batch paid page faults. Keep them in the heap instead (`tvck train`,
/// from its training step on).
#[cfg(all(feature = "train", target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes allocator tuning parameters; any value is valid.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(all(feature = "train", not(all(target_os = "linux", target_env = "gnu"))))]
pub fn keep_freed_memory() {}
