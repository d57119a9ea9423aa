//! What a deployed build is: its component (if any), its static assets by
//! path, and the serving rules from its `switchyard.toml`. Produced by the
//! deploy pipeline, kept by the control store, read on the request path.
//! Immutable once committed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_runtime::db::schema::Table;
use switchyard_runtime::{BuildId, ComponentId, LimitsOverride, ProjectId};

/// A committed build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The build's id (sortable by creation time).
    pub id: BuildId,
    /// The project it belongs to.
    pub project: ProjectId,
    /// When it was committed, in Unix milliseconds.
    pub created_at: i64,
    /// The compiled component, if the build has one.
    pub component: Option<ComponentId>,
    /// Assets and rules.
    pub manifest: BuildManifest,
}

/// The parts of a build the request path uses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildManifest {
    /// Static assets by path (`/index.html`).
    pub assets: BTreeMap<String, Asset>,
    /// Served (200) for GET/HEAD of paths that match nothing, in builds
    /// without a component: single-page apps route on the client.
    pub spa_fallback: Option<String>,
    /// Served with 404 for paths that match nothing.
    pub not_found: Option<String>,
    /// Extra response headers by path pattern.
    pub headers: Vec<HeaderRule>,
    /// `Cache-Control` by path pattern; the first match wins.
    pub cache: Vec<CacheRule>,
    /// Environment variables from `switchyard.toml` (the project's own, set
    /// through the admin API, take precedence).
    pub env: BTreeMap<String, String>,
    /// Sandbox limits the build asks for (never above its project's).
    pub limits: LimitsOverride,
    /// The gateway database's tables, as declared (and validated) at
    /// deploy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<Table>,
    /// The origins the guest may send HTTP requests to (`[egress] allow`),
    /// as written and validated at deploy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
}

impl BuildManifest {
    /// Total bytes of all assets.
    pub fn asset_bytes(&self) -> u64 {
        self.assets.values().map(|a| a.size).sum()
    }

    /// Every blob the build refers to.
    pub fn blob_hashes(&self) -> impl Iterator<Item = &str> {
        self.assets.values().flat_map(|a| {
            std::iter::once(a.hash.as_str()).chain(a.encodings.iter().map(|e| e.hash.as_str()))
        })
    }
}

/// One static file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    /// SHA-256 of the content, hex: the blob's name and the strong ETag.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// `Content-Type` to send.
    pub content_type: String,
    /// Precompressed variants (the `.br` / `.gz` siblings deployed with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encodings: Vec<Encoded>,
}

/// A precompressed variant of an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoded {
    /// The `Content-Encoding`.
    pub encoding: ContentEncoding,
    /// SHA-256 of the compressed bytes.
    pub hash: String,
    /// Size of the compressed bytes.
    pub size: u64,
}

/// The content codings Switchyard negotiates, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    /// Brotli (`.br` siblings).
    Br,
    /// Gzip (`.gz` siblings).
    Gzip,
}

impl ContentEncoding {
    /// The token used in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            ContentEncoding::Br => "br",
            ContentEncoding::Gzip => "gzip",
        }
    }

    /// The file extension of siblings with this encoding.
    pub fn extension(self) -> &'static str {
        match self {
            ContentEncoding::Br => ".br",
            ContentEncoding::Gzip => ".gz",
        }
    }
}

/// Headers added to responses whose path matches `pattern`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// A glob over the request path (`/assets/**`, `*.html`).
    pub pattern: String,
    /// Header names and values to set.
    pub set: BTreeMap<String, String>,
}

/// `Cache-Control` for responses whose path matches `pattern`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// A glob over the request path.
    pub pattern: String,
    /// The `Cache-Control` value, e.g. `public, max-age=31536000, immutable`.
    pub cache_control: String,
}

/// A new build id: creation time in milliseconds (hex, so ids sort by
/// time) and randomness, e.g. `b019a4c3f12ab-3f9c1d`.
pub fn new_build_id() -> BuildId {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random: u32 = rand::random();
    BuildId::new(&format!("b{millis:011x}-{:06x}", random & 0xff_ffff))
        .expect("hex digits and a hyphen make a valid build id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_lead_with_the_time_in_fixed_width_hex() {
        let id = new_build_id();
        let (time, random) = id.as_str()[1..].split_once('-').unwrap();
        assert_eq!((time.len(), random.len()), (11, 6));
        let millis = u64::from_str_radix(time, 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now - millis < 60_000);
    }

    #[test]
    fn manifests_round_trip_through_json() {
        let mut manifest = BuildManifest::default();
        manifest.assets.insert(
            "/app.js".into(),
            Asset {
                hash: "ab".repeat(32),
                size: 10,
                content_type: "text/javascript".into(),
                encodings: vec![Encoded {
                    encoding: ContentEncoding::Br,
                    hash: "cd".repeat(32),
                    size: 4,
                }],
            },
        );
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(
            serde_json::from_str::<BuildManifest>(&json).unwrap(),
            manifest
        );
        assert_eq!(manifest.blob_hashes().count(), 2);
        assert_eq!(manifest.asset_bytes(), 10);
    }
}
