//! Build script: with the `train` feature, embed libtorch's library folder as an rpath so
//! `cargo run` / `cargo test --features train` find libtorch with no environment variables.
//! torch-sys (links = "tch") hands that folder to its direct dependents as
//! `DEP_TCH_LIBTORCH_LIB`. Without the feature this does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = std::path::PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // Keep libtorch_cuda linked although no symbol of it is referenced, so that
    // `--device cuda` works when the wheel carries CUDA.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
