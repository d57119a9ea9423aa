//! `switchyard build`: builds an app directory and packs it into a deploy
//! bundle (a gzipped tar): `switchyard.toml`, the component as `app.wasm`,
//! and the asset directory as `assets/`.

use crate::deploy::manifest::AppManifest;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A packed bundle, ready to upload.
pub struct Bundle {
    /// The archive.
    pub path: PathBuf,
    /// The manifest it carries.
    pub manifest: AppManifest,
    /// Whether it has a component.
    pub has_component: bool,
    /// How many assets it has.
    pub assets: usize,
}

/// Where `switchyard build` leaves the bundle of the app in `dir`.
pub fn default_path(dir: &Path) -> PathBuf {
    dir.join("target/switchyard/bundle.tar.gz")
}

/// Builds the app in `dir` and packs its bundle into `path`.
pub fn build(dir: &Path, path: &Path) -> anyhow::Result<Bundle> {
    let manifest_path = dir.join("switchyard.toml");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is missing: every app has a switchyard.toml",
            manifest_path.display()
        )
    })?;
    let manifest = AppManifest::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;

    let cargo = dir.join("Cargo.toml").is_file();
    match (&manifest.build.command, cargo) {
        (Some(command), _) => run(Command::new("sh").arg("-c").arg(command).current_dir(dir))?,
        (None, true) => {
            ensure_wasm_target()?;
            run(Command::new(cargo_bin())
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(dir))?;
        }
        (None, false) => {}
    }

    let component = match &manifest.build.component {
        Some(path) => Some(dir.join(path)),
        None if cargo => Some(cargo_component(dir)?),
        None => None,
    };
    let assets_dir = dir.join(manifest.build.assets.as_deref().unwrap_or("assets"));
    let assets_dir = assets_dir.is_dir().then_some(assets_dir);

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_path_with_name(&manifest_path, "switchyard.toml")?;
    if let Some(component) = &component {
        tar.append_path_with_name(component, "app.wasm")
            .with_context(|| format!("cannot add the component {}", component.display()))?;
    }
    let mut assets = 0;
    if let Some(root) = &assets_dir {
        assets = add_assets(&mut tar, root, root)?;
    }
    tar.into_inner()?.finish()?.sync_all()?;
    if component.is_none() && assets == 0 {
        bail!(
            "nothing to deploy: no component and no assets in {}",
            dir.display()
        );
    }
    Ok(Bundle {
        path: path.to_path_buf(),
        manifest,
        has_component: component.is_some(),
        assets,
    })
}

/// Adds the regular files under `dir` as `assets/…`; refuses links, which
/// the server would refuse anyway.
fn add_assets<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    dir: &Path,
) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        let relative = path
            .strip_prefix(root)?
            .to_string_lossy()
            .replace('\\', "/");
        if kind.is_symlink() {
            bail!(
                "{} is a symlink; bundles may not contain links",
                path.display()
            );
        } else if kind.is_dir() {
            count += add_assets(tar, root, &path)?;
        } else if kind.is_file() {
            tar.append_path_with_name(&path, format!("assets/{relative}"))?;
            count += 1;
        }
    }
    Ok(count)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if !installed {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// The cdylib `cargo build --target wasm32-wasip2 --release` produced.
fn cargo_component(dir: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata: no target directory")?;
    let manifest = dir.join("Cargo.toml").canonicalize()?;
    let package = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages.iter().find(|p| {
                p["manifest_path"].as_str().map(PathBuf::from).as_deref()
                    == Some(manifest.as_path())
            })
        })
        .context("cargo metadata: the package of this directory is missing")?;
    let name = package["targets"]
        .as_array()
        .and_then(|targets| {
            targets.iter().find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
            })
        })
        .and_then(|t| t["name"].as_str())
        .context("the package has no cdylib target: add `[lib] crate-type = [\"cdylib\"]`")?;
    let wasm = Path::new(target)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("{} was not built", wasm.display());
    }
    Ok(wasm)
}
