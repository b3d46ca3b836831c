//! The sparse zip reader (`scan --hash`): for any bytes, the end-of-archive probe
//! (`zip::tail_directory`) must vouch only for archives whose directory parses the same
//! whatever lies below the offset it returns; and a file opened sparsely, once every
//! storage is loaded, must read exactly as the whole-file reader reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tvck::format::zip::{tail_directory, ZipArchive};
use tvck::format::Checkpoint;

fn entries(bytes: &[u8]) -> Result<Vec<tvck::format::zip::Entry>, String> {
    ZipArchive::parse(bytes)
        .map(|z| z.entries().to_vec())
        .map_err(|e| e.to_string())
}

fn all_bytes(c: &Checkpoint) -> Vec<Result<Vec<u8>, String>> {
    (0..c.tensors.len())
        .map(|i| c.tensor_bytes(i).map(|b| b.into_owned()).map_err(|e| e.to_string()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, file)) = data.split_first() else {
        return;
    };
    let t = (usize::from(k) * 97).min(file.len());
    let tail_start = file.len() - t;
    if let Some(dir) = tail_directory(&file[tail_start..], file.len() as u64) {
        let from = usize::try_from(dir).unwrap_or(usize::MAX).min(tail_start);
        let mut holey = file.to_vec();
        holey[..from].fill(0xAA);
        assert_eq!(entries(file), entries(&holey));
    }

    let path = std::env::temp_dir().join(format!("tvck-fuzz-sparse-{}.pt", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let whole = Checkpoint::open(&path);
    let sparse = Checkpoint::open_sparse_into(&path, Vec::new());
    match (whole, sparse) {
        (Err(a), Err((b, _))) => assert_eq!(a.to_string(), b.to_string()),
        (Ok(a), Ok(mut b)) => {
            assert_eq!(a.tensors, b.tensors);
            // NaN-aware: a file holding a NaN reads the same, not unequal to itself.
            assert!(a.root.identical(&b.root), "{:?} != {:?}", a.root, b.root);
            let every: Vec<usize> = (0..b.storages.len()).collect();
            b.load_storages(&every).unwrap();
            assert_eq!(all_bytes(&a), all_bytes(&b));
        }
        (a, b) => panic!("whole {:?} but sparse {:?}", a.err(), b.err().map(|e| e.0)),
    }
});
