//! `switchyard new <name>`: a Rust app, ready for `switchyard deploy`.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Where this binary's source tree had the SDK: the default for new apps'
/// `switchyard-sdk` path dependency (until the SDK is published).
pub const BUILT_IN_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// Creates `dir` (named like the project) with a Cargo package, a
/// `switchyard.toml` and a handler.
pub fn create(dir: &Path, sdk: Option<&Path>) -> anyhow::Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the app directory needs a name")?;
    switchyard_runtime::ProjectId::new(name)
        .map_err(|e| anyhow::anyhow!("`{name}` cannot be a project name: {e}"))?;
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let sdk: PathBuf = match sdk {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(BUILT_IN_SDK),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the SDK is not at {}; pass --sdk <path to guest-sdk>",
            sdk.display()
        )
    })?;

    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("assets"))?;
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("switchyard.toml", format!("project = \"{name}\"\n")),
        ("src/lib.rs", LIB_RS.to_owned()),
        ("assets/about.html", ABOUT_HTML.replace("{name}", name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
switchyard-sdk = {{ path = "{sdk}" }}

# An app is its own workspace.
[workspace]
"#,
        sdk = sdk.display()
    )
}

const LIB_RS: &str = r#"//! A Switchyard app. Deploy it with `switchyard deploy`.

use switchyard_sdk::{kv, Request, Response, Router};

fn handle(req: Request) -> Response {
    Router::new()
        .get("/", |_, _| Response::text("Hello from Switchyard!\n"))
        .get("/count", |_, _| match kv::increment("count", 1) {
            Ok(n) => Response::text(format!("this page was seen {n} times\n")),
            Err(e) => e.into(),
        })
        .handle(&req)
}

switchyard_sdk::export!(handle);
"#;

const ABOUT_HTML: &str =
    "<!doctype html>\n<title>{name}</title>\n<p>{name} serves this file as a static asset.</p>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffolds_an_app_and_refuses_bad_names_and_existing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("my-app");
        create(&app, None).unwrap();
        let cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-app\""));
        assert!(cargo.contains("switchyard-sdk = { path = \"/"));
        assert_eq!(
            std::fs::read_to_string(app.join("switchyard.toml")).unwrap(),
            "project = \"my-app\"\n"
        );
        assert!(create(&app, None).is_err(), "exists");
        assert!(create(&dir.path().join("Bad_Name"), None).is_err());
        assert!(create(&dir.path().join("x"), Some(&dir.path().join("nowhere"))).is_err());
    }
}
