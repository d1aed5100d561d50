//! Embeds the XDP object built by `cargo xtask build-ebpf` when it exists.
//!
//! The eBPF crate is built by a different compiler for a different target (see
//! ../shared/TOOLCHAIN.md), so cargo cannot build it as a dependency. xtask builds it first;
//! this script finds the object and sets `cfg(tandem_ebpf)` so `dataplane::xdp::loader` embeds it.
//! Without the object the binary still builds (editors, quick `cargo check`) and the node runs
//! with the userspace data plane, saying at run time how to get the XDP one.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tandem_ebpf)");
    println!("cargo::rerun-if-env-changed=TANDEM_EBPF_OBJECT");
    let object = match std::env::var_os("TANDEM_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            let manifest = PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
            );
            manifest.join("../target/ebpf/bpfel-unknown-none/release/lb-ebpf")
        }
    };
    println!("cargo::rerun-if-changed={}", object.display());
    if object.is_file() {
        println!("cargo::rustc-cfg=tandem_ebpf");
        println!("cargo::rustc-env=TANDEM_EBPF_OBJECT={}", object.display());
    } else {
        println!(
            "cargo::warning=XDP object {} not found: this tandem binary will run without the XDP data plane; build with `cargo xtask build`",
            object.display()
        );
    }
}
