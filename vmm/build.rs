//! Builds the bundled test guest (tests/guest) and hands it to the binary,
//! which boots it when the command line names no kernel.

use std::path::Path;
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let guest = Path::new(&manifest).join("../tests/guest");
    for p in ["src", "build.sh", "build.rs", "link.ld", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", guest.join(p).display());
    }
    // The guest has flags of its own; nothing of this build may leak in.
    let status = Command::new("bash")
        .arg(guest.join("build.sh"))
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running tests/guest/build.sh");
    assert!(status.success(), "tests/guest/build.sh failed");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::copy(
        guest.join("target/guest.elf"),
        Path::new(&out).join("guest.elf"),
    )
    .expect("copying the test guest");
}
