//! Paths to the guest components the tests run, built for `wasm32-wasip2`
//! (release) by this crate's build script from `examples/` and
//! `tests/guests/`, and to the WAT fixtures in `tests/guests/wat/`.
//!
//! Depending on this crate is what makes `cargo test` build the guests: no
//! separate step, and a guest that fails to build fails the test build.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Reads a guest component built by this crate (one of the constants).
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read guest component {path}: {e}"))
}

/// Compiles `tests/guests/wat/<name>.wat` to binary, after replacing each
/// `(from, to)` pair in its text (fixtures use `$NAME` placeholders).
pub fn wat(name: &str, substitutions: &[(&str, &str)]) -> Vec<u8> {
    let path = format!("{WAT_DIR}/{name}.wat");
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    for (from, to) in substitutions {
        text = text.replace(from, to);
    }
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
