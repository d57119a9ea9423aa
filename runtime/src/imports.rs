//! Which components the host accepts: a component (never a core module)
//! whose every top-level import is an interface Switchyard provides.
//!
//! Checked on the raw bytes before anything is compiled, so a refusal is
//! cheap and names the offending import. Whether an allowed import's *types*
//! match the host is checked afterwards, when the component is linked.

use crate::error::LoadError;
use wasmparser::{Encoding, Parser, Payload};

/// The WASI 0.2 interfaces a guest may import, by package.
///
/// This is what real toolchains emit: Rust's std imports wasi:cli
/// environment/exit; componentize-js and componentize-py also import
/// wasi:filesystem and wasi:sockets. Those two are linked but empty: no
/// preopened directories, every socket address refused.
const WASI_0_2: &[(&str, &[&str])] = &[
    ("wasi:http", &["types", "outgoing-handler"]),
    ("wasi:io", &["error", "poll", "streams"]),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"]),
    ("wasi:random", &["random", "insecure", "insecure-seed"]),
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:filesystem", &["types", "preopens"]),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
    ),
];

/// Switchyard's own interfaces, version 0.1.x.
const GATEWAY_0_1: &[&str] = &["kv", "db"];

/// Whether `name` (e.g. `wasi:http/types@0.2.3`) is an import the host
/// provides.
pub(crate) fn is_allowed_import(name: &str) -> bool {
    let Some((path, version)) = name.split_once('@') else {
        return false;
    };
    let Some((package, interface)) = path.split_once('/') else {
        return false;
    };
    let Some(patch) = version
        .strip_prefix("0.2.")
        .or_else(|| version.strip_prefix("0.1."))
    else {
        return false;
    };
    // Patch releases only, and no pre-releases: `0.2.3`, never `0.2.3-rc`.
    if patch.is_empty() || !patch.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if package == "switchyard:gateway" {
        return version.starts_with("0.1.") && GATEWAY_0_1.contains(&interface);
    }
    version.starts_with("0.2.")
        && WASI_0_2
            .iter()
            .any(|(pkg, interfaces)| *pkg == package && interfaces.contains(&interface))
}

/// Checks that `bytes` are a component whose top-level imports are all
/// allowed.
pub(crate) fn check_component(bytes: &[u8]) -> Result<(), LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm);
    }
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Invalid(e.message().to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(LoadError::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            // Only the outermost component's imports reach the host; nested
            // components and modules import from their parent.
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| LoadError::Invalid(e.message().to_string()))?;
                    let name = import.name.name;
                    if !is_allowed_import(name) {
                        return Err(LoadError::ImportNotAllowed(printable(name)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// An import name fit to show back: bounded, without control characters.
fn printable(name: &str) -> String {
    name.chars()
        .take(200)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_wasi_0_2_and_gateway_0_1_interfaces() {
        for name in [
            "wasi:http/types@0.2.0",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:io/streams@0.2.6",
            "wasi:cli/environment@0.2.3",
            "wasi:cli/terminal-stderr@0.2.0",
            "wasi:filesystem/preopens@0.2.0",
            "wasi:sockets/tcp-create-socket@0.2.0",
            "wasi:random/insecure-seed@0.2.9",
            "wasi:clocks/wall-clock@0.2.0",
            "switchyard:gateway/kv@0.1.0",
            "switchyard:gateway/db@0.1.0",
        ] {
            assert!(is_allowed_import(name), "{name}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for name in [
            "wasi:http/types",
            "wasi:http/types@0.3.0",
            "wasi:http/types@0.2.0-rc-2023-11-10",
            "wasi:http/types@0.2.",
            "wasi:http/handler@0.2.0",
            "wasi:keyvalue/store@0.2.0",
            "wasi:cli/run@0.2.0",
            "wasi:clocks/timezone@0.2.0",
            "switchyard:gateway/kv@0.2.0",
            "switchyard:gateway/admin@0.1.0",
            "evil:host/api@0.2.0",
            "wasi:http",
            "",
        ] {
            assert!(!is_allowed_import(name), "{name}");
        }
    }

    #[test]
    fn core_modules_and_garbage_are_refused() {
        assert!(matches!(
            check_component(b"not wasm"),
            Err(LoadError::NotWasm)
        ));
        let module = wat::parse_str("(module)").unwrap();
        assert!(matches!(
            check_component(&module),
            Err(LoadError::CoreModule)
        ));
        let truncated = &wat::parse_str("(component (core module))").unwrap()[..12];
        assert!(matches!(
            check_component(truncated),
            Err(LoadError::Invalid(_))
        ));
    }

    #[test]
    fn names_the_first_disallowed_import() {
        let component = wat::parse_str(
            r#"(component
                (import "wasi:io/poll@0.2.0" (instance))
                (import "evil:host/api@1.0.0" (instance)))"#,
        )
        .unwrap();
        match check_component(&component) {
            Err(LoadError::ImportNotAllowed(name)) => assert_eq!(name, "evil:host/api@1.0.0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nested_imports_are_not_host_imports() {
        let component = wat::parse_str(
            r#"(component
                (component (import "anything:at/all@9.9.9" (instance))))"#,
        )
        .unwrap();
        assert!(check_component(&component).is_ok());
    }
}
