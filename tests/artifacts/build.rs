//! Builds every guest (examples and test fixtures) for `wasm32-wasip2` in
//! release mode, in a target directory of its own, and writes their paths as
//! constants for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant): every guest the tests use.
const GUESTS: &[(&str, &str)] = &[
    ("hello", "HELLO"),
    ("counter", "COUNTER"),
    ("hostile", "HOSTILE"),
    ("plain-proxy", "PLAIN_PROXY"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("tests/artifacts sits two levels below the workspace root")
        .to_path_buf();
    for dir in ["guest-sdk", "examples", "tests/guests", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    ensure_target();

    // Not the outer build's target directory: that one is locked by the
    // build running this script.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        build.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
    ] {
        build.env_remove(var);
    }
    // Keep build-script stdout clean: cargo reads it for directives.
    build.stdout(std::io::stderr());
    let status = build
        .status()
        .expect("cannot run cargo to build the guests");
    assert!(status.success(), "building the guest components failed");

    let out = target_dir.join(TARGET).join("release");
    let mut code = String::new();
    for (package, constant) in GUESTS {
        let wasm = out.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.is_file(), "{} was not built", wasm.display());
        code.push_str(&format!(
            "/// `{package}`, built for {TARGET}.\npub const {constant}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    code.push_str(&format!(
        "/// The directory of the WAT fixtures.\npub const WAT_DIR: &str = {:?};\n",
        root.join("tests/guests/wat").display().to_string()
    ));
    let dest = Path::new(&env("OUT_DIR")).join("artifacts.rs");
    std::fs::write(&dest, code).expect("cannot write artifacts.rs");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}

/// Installs the wasm32-wasip2 standard library if rustup has not yet.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|dir| dir.is_dir()) {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(std::io::stderr())
        .status()
        .expect("the wasm32-wasip2 target is missing and rustup is not available to add it");
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}
