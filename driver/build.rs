//! Compiles the XDP program (bpf/xsk_redirect.bpf.c) with clang when the `afxdp` feature is on.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/xsk_redirect.bpf.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_AFXDP").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("xsk_redirect.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-c", "bpf/xsk_redirect.bpf.c", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!("running {clang} to build the XDP program: {e} (install clang, or disable the `afxdp` feature)")
        });
    assert!(
        status.success(),
        "{clang} failed to build bpf/xsk_redirect.bpf.c"
    );
}
