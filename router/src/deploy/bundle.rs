//! The deploy bundle: a tar archive, optionally gzip-compressed, holding
//! `switchyard.toml`, an optional `app.wasm` component and an optional
//! `assets/` tree (`assets/css/site.css` is served at `/css/site.css`).
//!
//! It is untrusted input. The upload is spooled to a scratch file under a
//! byte cap; then the archive is read entry by entry, every rule and cap
//! checked as it streams (decompressed bytes included), and assets copied to
//! scratch files named by number, never by the archive's names. Nothing
//! outside the scratch directory is touched.

use super::manifest::{AppManifest, MAX_MANIFEST_BYTES, check_asset_path};
use crate::config::DeployConfig;
use crate::error::ApiError;
use bytes::Buf;
use http_body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Entries an archive may have beyond its assets (directories, the
/// manifest, the component).
const EXTRA_ENTRIES: usize = 1000;

/// What a valid bundle contained.
#[derive(Debug)]
pub struct Extracted {
    /// The parsed, validated manifest.
    pub manifest: AppManifest,
    /// The component's bytes, if any.
    pub component: Option<Vec<u8>>,
    /// The assets, in archive order.
    pub assets: Vec<ExtractedAsset>,
}

/// One asset, copied to the scratch directory.
#[derive(Debug)]
pub struct ExtractedAsset {
    /// Where it will be served, e.g. `/css/site.css`.
    pub path: String,
    /// Its scratch copy.
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        code,
        message: message.into(),
    }
}

/// Writes the request body to `dest`, refusing (413) past `max` bytes, and
/// giving up on an upload that stalls.
pub async fn receive<B>(mut body: B, dest: &Path, max: u64) -> Result<u64, ApiError>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| ApiError::io(&format!("cannot create {}", dest.display()), &e))?;
    let mut received = 0u64;
    loop {
        let next = tokio::time::timeout(crate::idle::BODY_STALL_TIMEOUT, body.frame())
            .await
            .map_err(|_| ApiError::BadRequest("the upload stalled".into()))?;
        let Some(frame) = next else { break };
        let frame =
            frame.map_err(|e| ApiError::BadRequest(format!("the upload broke off: {e}")))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        received += data.remaining() as u64;
        if received > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "the bundle is larger than the limit of {max} bytes"
            )));
        }
        file.write_all_buf(&mut data)
            .await
            .map_err(|e| ApiError::io("cannot write the upload", &e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::io("cannot write the upload", &e))?;
    Ok(received)
}

/// Reads and checks the archive at `archive`, copying assets into `scratch`.
/// Blocking: run it off the async workers.
pub fn extract(
    archive: &Path,
    scratch: &Path,
    limits: &DeployConfig,
) -> Result<Extracted, ApiError> {
    let file = std::fs::File::open(archive)
        .map_err(|e| ApiError::Internal(format!("cannot open the upload: {e}")))?;
    read_bundle(std::io::BufReader::new(file), scratch, limits)
}

/// Reads and checks a bundle (a tar archive, gzip-compressed or not) from
/// `reader`, copying assets into `scratch`. Blocking.
pub fn read_bundle(
    mut reader: impl BufRead,
    scratch: &Path,
    limits: &DeployConfig,
) -> Result<Extracted, ApiError> {
    let head = reader
        .fill_buf()
        .map_err(|e| ApiError::Internal(format!("cannot read the upload: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        read_archive(flate2::bufread::GzDecoder::new(reader), scratch, limits)
    } else {
        read_archive(reader, scratch, limits)
    }
}

/// Tar's own bytes beyond the files' contents: headers, padding, PAX
/// records and long names, allowed per entry.
const ARCHIVE_OVERHEAD_PER_ENTRY: u64 = 4096;

/// The most bytes a valid bundle can unpack to: every cap at its limit, plus
/// tar's overhead. Reading stops there, so a bundle that decompresses (or
/// declares metadata) without end costs at most this much work.
fn max_unpacked_bytes(limits: &DeployConfig) -> u64 {
    let entries = (limits.max_assets + EXTRA_ENTRIES) as u64;
    limits
        .max_total_asset_bytes
        .saturating_add(limits.max_component_bytes)
        .saturating_add(MAX_MANIFEST_BYTES as u64)
        .saturating_add(entries.saturating_mul(ARCHIVE_OVERHEAD_PER_ENTRY))
}

/// A reader that fails once more than `remaining` bytes have come through,
/// and remembers that it did (tar wraps the error it returns).
struct Capped<R> {
    inner: R,
    remaining: u64,
    tripped: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.tripped.set(true);
            return Err(std::io::Error::other(
                "the bundle unpacks to too many bytes",
            ));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn read_archive(
    reader: impl Read,
    scratch: &Path,
    limits: &DeployConfig,
) -> Result<Extracted, ApiError> {
    let max_unpacked = max_unpacked_bytes(limits);
    let tripped = std::rc::Rc::new(std::cell::Cell::new(false));
    let reader = Capped {
        inner: reader,
        remaining: max_unpacked,
        tripped: tripped.clone(),
    };
    let corrupt = |e: std::io::Error| {
        if tripped.get() {
            return refuse(
                "DEPLOYMENT_TOO_LARGE",
                format!("the bundle unpacks to more than {max_unpacked} bytes"),
            );
        }
        refuse(
            "BUNDLE_INVALID",
            format!("the bundle is not a valid tar archive: {e}"),
        )
    };
    let mut archive = tar::Archive::new(reader);
    let mut manifest_text = None;
    let mut component = None;
    let mut assets = Vec::new();
    let mut seen = HashSet::new();
    let mut total_bytes = 0u64;
    let max_entries = limits.max_assets + EXTRA_ENTRIES;

    for (index, entry) in archive.entries().map_err(corrupt)?.enumerate() {
        if index >= max_entries {
            return Err(refuse(
                "TOO_MANY_ASSETS",
                format!("the bundle has more than {max_entries} entries"),
            ));
        }
        let mut entry = entry.map_err(corrupt)?;
        let name = entry_name(&entry.path_bytes())?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(refuse(
                "ARCHIVE_LINK_REFUSED",
                format!("`{name}` is a link; bundles may not contain links"),
            ));
        }
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(
                "BUNDLE_INVALID",
                format!("`{name}` is not a regular file"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(refuse(
                "DUPLICATE_ENTRY",
                format!("`{name}` appears twice in the bundle"),
            ));
        }
        // The entry's real size: a PAX `size` record overrides the header's.
        let declared = entry.size();

        match name.as_str() {
            "switchyard.toml" => {
                if declared > MAX_MANIFEST_BYTES as u64 {
                    return Err(refuse(
                        "INVALID_MANIFEST",
                        format!("switchyard.toml is larger than {MAX_MANIFEST_BYTES} bytes"),
                    ));
                }
                let bytes =
                    read_at_most(&mut entry, MAX_MANIFEST_BYTES as u64).map_err(&corrupt)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| refuse("INVALID_MANIFEST", "switchyard.toml is not UTF-8 text"))?;
                manifest_text = Some(text);
            }
            "app.wasm" => {
                if declared > limits.max_component_bytes {
                    return Err(refuse(
                        "COMPONENT_TOO_LARGE",
                        format!(
                            "app.wasm is {declared} bytes; the limit is {}",
                            limits.max_component_bytes
                        ),
                    ));
                }
                component =
                    Some(read_at_most(&mut entry, limits.max_component_bytes).map_err(&corrupt)?);
            }
            other => {
                let Some(relative) = other.strip_prefix("assets/") else {
                    return Err(refuse(
                        "BUNDLE_UNEXPECTED_ENTRY",
                        format!(
                            "`{other}`: a bundle holds only switchyard.toml, app.wasm and assets/"
                        ),
                    ));
                };
                let path = format!("/{relative}");
                check_asset_path(&path)?;
                if assets.len() >= limits.max_assets {
                    return Err(refuse(
                        "TOO_MANY_ASSETS",
                        format!("more than {} assets", limits.max_assets),
                    ));
                }
                if declared > limits.max_asset_bytes {
                    return Err(refuse(
                        "ASSET_TOO_LARGE",
                        format!(
                            "`{path}` is {declared} bytes; the limit is {}",
                            limits.max_asset_bytes
                        ),
                    ));
                }
                total_bytes += declared;
                if total_bytes > limits.max_total_asset_bytes {
                    return Err(refuse(
                        "DEPLOYMENT_TOO_LARGE",
                        format!(
                            "the assets are larger than the limit of {} bytes",
                            limits.max_total_asset_bytes
                        ),
                    ));
                }
                let file = scratch.join(format!("asset-{}", assets.len()));
                let (size, sha256) =
                    copy_hashed(&mut entry, &file, limits.max_asset_bytes, &corrupt)?;
                assets.push(ExtractedAsset {
                    path,
                    file,
                    size,
                    sha256,
                });
            }
        }
    }

    let text = manifest_text
        .ok_or_else(|| refuse("INVALID_MANIFEST", "the bundle has no switchyard.toml"))?;
    let manifest = AppManifest::parse(&text)?;
    if component.is_none() && assets.is_empty() {
        return Err(refuse(
            "BUNDLE_EMPTY",
            "the bundle has neither app.wasm nor assets",
        ));
    }
    manifest.check_paths(|path| assets.iter().any(|a| a.path == path))?;
    Ok(Extracted {
        manifest,
        component,
        assets,
    })
}

/// The entry's name as `a/b/c`: UTF-8, relative, no `..` or `.` segments
/// after a leading `./` is dropped, no backslashes or control characters
/// (empty segments are refused as `//` by [`check_asset_path`]).
fn entry_name(raw: &[u8]) -> Result<String, ApiError> {
    let refused = |why: &str| {
        let shown: String = String::from_utf8_lossy(raw)
            .chars()
            .take(100)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        refuse("ARCHIVE_PATH_REFUSED", format!("`{shown}`: {why}"))
    };
    let name = std::str::from_utf8(raw).map_err(|_| refused("not UTF-8"))?;
    if name.starts_with('/') {
        return Err(refused("absolute paths are refused"));
    }
    let name = name.strip_prefix("./").unwrap_or(name);
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.split('/').any(|segment| segment == "..") {
        return Err(refused("paths may not escape the bundle (`..`)"));
    }
    if name.split('/').any(|segment| segment == ".") {
        return Err(refused("paths may not contain `.` segments"));
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Err(refused("paths may not contain `\\` or control characters"));
    }
    Ok(name.to_owned())
}

/// Reads all of `entry`, which its header says is at most `max` bytes: a
/// wrong header cannot make this read more.
fn read_at_most(entry: &mut impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(
            "an entry is longer than its header says",
        ));
    }
    Ok(bytes)
}

/// Copies `from` into a new file, hashing it, never more than `max` bytes.
fn copy_hashed(
    from: &mut impl Read,
    to: &Path,
    max: u64,
    corrupt: &impl Fn(std::io::Error) -> ApiError,
) -> Result<(u64, String), ApiError> {
    let io = |e: std::io::Error| ApiError::io("cannot write a scratch file", &e);
    let mut out = std::fs::File::create(to).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max {
            return Err(refuse(
                "ASSET_TOO_LARGE",
                format!("an asset is larger than the limit of {max} bytes"),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DeployConfig {
        DeployConfig {
            max_assets: 3,
            max_asset_bytes: 100,
            max_total_asset_bytes: 150,
            max_component_bytes: 50,
            ..DeployConfig::default()
        }
    }

    /// A tar archive of `(name, bytes)` files, written with raw headers so
    /// that names the tar crate would refuse can be tested too.
    fn archive(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data, kind) in entries {
            let mut header = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_entry_type(*kind);
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name("target").unwrap();
            }
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;
    const MANIFEST: (&str, &[u8], tar::EntryType) = ("switchyard.toml", b"", FILE);

    fn run(bytes: &[u8]) -> Result<Extracted, ApiError> {
        let dir = tempfile::tempdir().unwrap();
        read_archive(bytes, dir.path(), &limits())
    }

    fn code_of(entries: &[(&str, &[u8], tar::EntryType)]) -> &'static str {
        run(&archive(entries)).unwrap_err().code()
    }

    #[test]
    fn reads_a_valid_bundle() {
        let bytes = archive(&[
            ("switchyard.toml", b"spa_fallback = \"/index.html\"", FILE),
            ("app.wasm", b"\0asm", FILE),
            ("assets/", b"", tar::EntryType::Directory),
            ("./assets/index.html", b"<h1>hi</h1>", FILE),
            ("assets/css/site.css", b"body{}", FILE),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let out = read_archive(bytes.as_slice(), dir.path(), &limits()).unwrap();
        assert_eq!(out.component.as_deref(), Some(&b"\0asm"[..]));
        let paths: Vec<_> = out.assets.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["/index.html", "/css/site.css"]);
        assert_eq!(std::fs::read(&out.assets[0].file).unwrap(), b"<h1>hi</h1>");
        assert_eq!(
            out.assets[0].sha256,
            hex::encode(Sha256::digest(b"<h1>hi</h1>"))
        );
        assert_eq!(out.manifest.spa_fallback.as_deref(), Some("/index.html"));
    }

    #[test]
    fn gzip_bundles_are_read_too() {
        let tar = archive(&[MANIFEST, ("assets/a.txt", b"a", FILE)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let out = extract(&path, dir.path(), &limits()).unwrap();
        assert_eq!(out.assets.len(), 1);
    }

    #[test]
    fn refuses_links_escapes_duplicates_and_strangers() {
        let link = tar::EntryType::Symlink;
        let hard = tar::EntryType::Link;
        assert_eq!(
            code_of(&[MANIFEST, ("assets/x", b"", link)]),
            "ARCHIVE_LINK_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/x", b"", hard)]),
            "ARCHIVE_LINK_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("/etc/passwd", b"x", FILE)]),
            "ARCHIVE_PATH_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/../../x", b"x", FILE)]),
            "ARCHIVE_PATH_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/a\\b", b"x", FILE)]),
            "ARCHIVE_PATH_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/a\u{1}b", b"x", FILE)]),
            "ARCHIVE_PATH_REFUSED"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/a//b", b"x", FILE)]),
            "INVALID_ASSET_PATH"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/./a", b"x", FILE)]),
            "ARCHIVE_PATH_REFUSED"
        );
        assert_eq!(
            code_of(&[
                MANIFEST,
                ("assets/a", b"1", FILE),
                ("./assets/a", b"2", FILE)
            ]),
            "DUPLICATE_ENTRY"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("secrets.txt", b"x", FILE)]),
            "BUNDLE_UNEXPECTED_ENTRY"
        );
        assert_eq!(
            code_of(&[MANIFEST, ("assets/fifo", b"", tar::EntryType::Fifo)]),
            "BUNDLE_INVALID"
        );
        assert_eq!(
            run(b"definitely not tar").unwrap_err().code(),
            "BUNDLE_INVALID"
        );
    }

    /// An archive whose entries' real sizes are in PAX `size` records while
    /// their ustar headers say 0.
    fn pax_sized(entries: &[(&str, usize)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut manifest = tar::Header::new_ustar();
        manifest.set_path("switchyard.toml").unwrap();
        manifest.set_size(0);
        manifest.set_cksum();
        builder.append(&manifest, &b""[..]).unwrap();
        for (name, size) in entries {
            let size_record = size.to_string();
            builder
                .append_pax_extensions([("size", size_record.as_bytes())])
                .unwrap();
            let mut header = tar::Header::new_ustar();
            header.set_path(name).unwrap();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, &b""[..]).unwrap();
            let padded = size.div_ceil(512) * 512;
            builder.get_mut().extend(std::iter::repeat_n(b'x', *size));
            builder
                .get_mut()
                .extend(std::iter::repeat_n(0, padded - size));
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn pax_sizes_are_held_to_the_caps() {
        let code = |entries: &[(&str, usize)]| run(&pax_sized(entries)).unwrap_err().code();
        // What tar reads for these entries is the PAX size, not the header's 0.
        assert_eq!(code(&[("app.wasm", 1000)]), "COMPONENT_TOO_LARGE");
        assert_eq!(code(&[("assets/a", 101)]), "ASSET_TOO_LARGE");
        assert_eq!(
            code(&[("assets/a", 90), ("assets/b", 90)]),
            "DEPLOYMENT_TOO_LARGE"
        );
        let ok = run(&pax_sized(&[("assets/a", 90)])).unwrap();
        assert_eq!(ok.assets[0].size, 90);
    }

    #[test]
    fn unpacking_stops_at_the_bundles_largest_possible_size() {
        // A directory entry carrying 64 MiB of zeros: tiny gzipped, far more
        // than a bundle within these limits can unpack to.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let tar = archive(&[MANIFEST, ("assets/", &zeros, tar::EntryType::Directory)]);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        let gzip = gzip.finish().unwrap();
        assert!(gzip.len() < 1024 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let decoder = flate2::read::GzDecoder::new(gzip.as_slice());
        let err = read_archive(decoder, dir.path(), &limits()).unwrap_err();
        assert_eq!(err.code(), "DEPLOYMENT_TOO_LARGE", "{err}");
        assert!(max_unpacked_bytes(&limits()) < zeros.len() as u64);
    }

    #[test]
    fn counts_assets_and_bytes_while_streaming() {
        let names = ["assets/a", "assets/b", "assets/c", "assets/d"];
        let four: Vec<_> = std::iter::once(MANIFEST)
            .chain(names.iter().map(|n| (*n, &b"x"[..], FILE)))
            .collect();
        assert_eq!(code_of(&four), "TOO_MANY_ASSETS");
        assert_eq!(
            code_of(&[MANIFEST, ("assets/big", &[0u8; 101], FILE)]),
            "ASSET_TOO_LARGE"
        );
        // 50 + 50 + 51 bytes: each under 100, together over 150.
        let total = [
            MANIFEST,
            ("assets/a", &[0u8; 50][..], FILE),
            ("assets/b", &[0u8; 50][..], FILE),
            ("assets/c", &[0u8; 51][..], FILE),
        ];
        assert_eq!(code_of(&total), "DEPLOYMENT_TOO_LARGE");
        assert_eq!(
            code_of(&[MANIFEST, ("app.wasm", &[0u8; 51], FILE)]),
            "COMPONENT_TOO_LARGE"
        );
    }

    #[test]
    fn needs_a_manifest_and_some_content() {
        assert_eq!(code_of(&[("assets/a", b"x", FILE)]), "INVALID_MANIFEST");
        assert_eq!(code_of(&[MANIFEST]), "BUNDLE_EMPTY");
        assert_eq!(
            code_of(&[
                ("switchyard.toml", b"not_found = \"/404.html\"", FILE),
                ("assets/a", b"x", FILE)
            ]),
            "INVALID_MANIFEST"
        );
    }
}
