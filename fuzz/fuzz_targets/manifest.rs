//! `switchyard.toml` parsing and validation. Invariant: it refuses with a
//! client error code, or accepts a manifest whose schema, egress rules,
//! env names and page paths all pass their own checks again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::deploy::manifest::{AppManifest, check_asset_path, check_env_name};
use switchyard::error::ApiError;
use switchyard_runtime::EgressAllowlist;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AppManifest::parse(text) {
        Ok(manifest) => {
            assert!(manifest.schema().is_ok());
            assert!(EgressAllowlist::parse(&manifest.egress.allow).is_ok());
            for name in manifest.env.keys() {
                assert!(check_env_name(name).is_ok(), "{name}");
            }
            for path in [&manifest.spa_fallback, &manifest.not_found]
                .into_iter()
                .flatten()
            {
                assert!(check_asset_path(path).is_ok(), "{path}");
            }
        }
        Err(ApiError::Invalid { .. }) => {}
        Err(other) => panic!("a manifest got a server-side error: {other:?}"),
    }
});
