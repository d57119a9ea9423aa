//! Builds every guest the tests run, in a target directory of its own, and
//! writes their paths as constants for the tests:
//!
//! - the Rust guests (examples and fixtures), for `wasm32-wasip2` in release;
//! - a Python and a JavaScript fixture, with componentize-py (from PyPI) and
//!   componentize-js (from npm) at pinned versions, installed under
//!   `target/guests/tools/`: what apps in those languages are really built
//!   with, and they import more of WASI (wasi:filesystem, wasi:sockets) than
//!   Rust's std does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, constant): every guest the tests use.
const GUESTS: &[(&str, &str)] = &[
    ("hello", "HELLO"),
    ("counter", "COUNTER"),
    ("todo-api", "TODO_API"),
    ("hostile", "HOSTILE"),
    ("plain-proxy", "PLAIN_PROXY"),
];

const TARGET: &str = "wasm32-wasip2";

/// The Python component toolchain (PyPI).
const COMPONENTIZE_PY: &str = "0.25.1";

/// The JavaScript component toolchain (npm).
const COMPONENTIZE_JS: &str = "0.23.0";

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
    // build running this script. A relative CARGO_TARGET_DIR is taken from
    // the workspace root, as cargo does when run there; this script runs in
    // its own package's directory.
    let target_dir = root
        .join(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from))
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
    let tools = target_dir.join("tools");
    let other_toolchains = [
        (
            "PYTHON",
            "componentize-py",
            build_python(&root, &tools, &out),
        ),
        (
            "JAVASCRIPT",
            "componentize-js",
            build_javascript(&root, &tools, &out),
        ),
    ];
    for (constant, toolchain, wasm) in other_toolchains {
        code.push_str(&format!(
            "/// The {toolchain} fixture.\npub const {constant}: &str = {:?};\n",
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

/// `tests/guests/python` built with componentize-py.
fn build_python(root: &Path, tools: &Path, out: &Path) -> PathBuf {
    let app = root.join("tests/guests/python");
    let wasm = out.join("python.wasm");
    if is_fresh(&wasm, &[&app, &root.join("wit")]) {
        return wasm;
    }
    let install = tools.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let componentize = install.join("bin/componentize-py");
    if !componentize.is_file() {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&install)
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")));
    }
    run(Command::new(componentize)
        .env("PYTHONPATH", &install)
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "switchyard:gateway/app", "componentize", "-p"])
        .arg(&app)
        .args(["app", "-o"])
        .arg(&wasm));
    wasm
}

/// `tests/guests/js` built with componentize-js.
fn build_javascript(root: &Path, tools: &Path, out: &Path) -> PathBuf {
    let app = root.join("tests/guests/js");
    let wasm = out.join("javascript.wasm");
    if is_fresh(&wasm, &[&app, &root.join("wit")]) {
        return wasm;
    }
    let install = tools.join(format!("componentize-js-{COMPONENTIZE_JS}"));
    let componentize = install.join("node_modules/.bin/componentize-js");
    if !componentize.is_file() {
        std::fs::create_dir_all(&install).expect("cannot create the toolchain directory");
        run(Command::new("npm").current_dir(&install).args([
            "install",
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            &format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"),
        ]));
    }
    run(Command::new(componentize)
        .arg(app.join("app.js"))
        .arg("--wit")
        .arg(root.join("wit"))
        .args([
            "--world-name",
            "switchyard:gateway/app",
            "--disable",
            "fetch-event",
            "-o",
        ])
        .arg(&wasm));
    wasm
}

/// Whether `output` exists and is newer than every file under `inputs`.
fn is_fresh(output: &Path, inputs: &[&Path]) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return false;
    };
    fn newest(path: &Path) -> std::time::SystemTime {
        let Ok(meta) = std::fs::metadata(path) else {
            return std::time::SystemTime::now();
        };
        let own = meta
            .modified()
            .unwrap_or_else(|_| std::time::SystemTime::now());
        if !meta.is_dir() {
            return own;
        }
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| newest(&entry.path()))
            .fold(own, std::cmp::max)
    }
    inputs.iter().all(|input| newest(input) < built)
}

/// Runs a build step with its output on stderr, failing the build if it fails.
fn run(command: &mut Command) {
    let status = command
        .stdout(std::io::stderr())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed with {status}");
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
