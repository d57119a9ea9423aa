//! The asset path resolver: a request path, percent-decoded and looked up
//! in a build's asset map, and the path check every deployed asset passes.
//! Invariants: a path that passes the check cannot leave a directory it is
//! joined to (only normal components, no NUL); what the resolver finds is
//! an asset of the build, reached from the decoded path itself or its
//! `index.html`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use std::sync::OnceLock;
use switchyard::assets::{find, percent_decode};
use switchyard::build::BuildManifest;
use switchyard::deploy::manifest::check_asset_path;

fn manifest() -> &'static BuildManifest {
    static MANIFEST: OnceLock<BuildManifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        let asset = serde_json::json!({"hash": "00", "size": 1, "content_type": "text/plain"});
        let assets: serde_json::Map<String, serde_json::Value> = [
            "/index.html",
            "/docs/index.html",
            "/css/site.css",
            "/a b/c%d.txt",
            "/über.txt",
        ]
        .into_iter()
        .map(|p| (p.to_owned(), asset.clone()))
        .collect();
        serde_json::from_value(serde_json::json!({ "assets": assets }))
            .expect("the fixture manifest is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };

    if check_asset_path(path).is_ok() {
        assert!(!path.contains('\0'));
        let mut components = Path::new(path).components();
        assert_eq!(components.next(), Some(Component::RootDir));
        assert!(
            components.all(|c| matches!(c, Component::Normal(_))),
            "{path} escapes"
        );
        assert!(
            Path::new("/srv/site")
                .join(&path[1..])
                .starts_with("/srv/site")
        );
    }

    if let Some((found, _)) = find(manifest(), path) {
        let decoded = percent_decode(path).expect("found paths decode");
        assert!(manifest().assets.contains_key(&found));
        assert!(
            found == decoded
                || found == format!("{decoded}index.html")
                || found == format!("{decoded}/index.html"),
            "{path} resolved to {found}"
        );
    }
});
