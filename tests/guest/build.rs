// Link arguments of the guest (the code-generation flags come from
// build.sh, which is the supported way to build; see README.md).
use std::env;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags
        .split('\x1f')
        .any(|f| f == "relocation-model=static" || f == "-Crelocation-model=static")
    {
        panic!("build the test guest with tests/guest/build.sh (it sets the required RUSTFLAGS)");
    }
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,--no-dynamic-linker",
        "-Wl,-z,norelro",
        "-Wl,-z,noexecstack",
        "-Wl,--orphan-handling=warn",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
}
