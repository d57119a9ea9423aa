//! The deploy bundle reader (tar, gzip or not), with small caps. Invariant:
//! it refuses with a client error code or returns a bundle within every
//! cap, whose asset paths are valid and whose scratch copies are what their
//! size and hash say, inside the scratch directory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use switchyard::config::DeployConfig;
use switchyard::deploy::bundle::read_bundle;
use switchyard::deploy::manifest::check_asset_path;
use switchyard::error::ApiError;

fn limits() -> DeployConfig {
    DeployConfig {
        max_assets: 16,
        max_asset_bytes: 64 * 1024,
        max_total_asset_bytes: 256 * 1024,
        max_component_bytes: 64 * 1024,
        ..DeployConfig::default()
    }
}

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let dir = scratch().path();
    match read_bundle(data, dir, &limits) {
        Ok(bundle) => {
            assert!(bundle.assets.len() <= limits.max_assets);
            assert!(
                bundle
                    .component
                    .as_ref()
                    .is_none_or(|c| c.len() as u64 <= limits.max_component_bytes)
            );
            let mut total = 0;
            for asset in &bundle.assets {
                assert!(check_asset_path(&asset.path).is_ok(), "{}", asset.path);
                assert_eq!(asset.file.parent(), Some(dir));
                let bytes = std::fs::read(&asset.file).expect("the scratch copy");
                assert_eq!(bytes.len() as u64, asset.size);
                assert!(asset.size <= limits.max_asset_bytes);
                total += asset.size;
            }
            assert!(total <= limits.max_total_asset_bytes);
        }
        Err(ApiError::Invalid { code, .. }) => {
            assert!(code.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        }
        Err(ApiError::PayloadTooLarge(_)) => {}
        Err(other) => panic!("a bundle got a server-side error: {other:?}"),
    }
});
