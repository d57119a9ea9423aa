//! Content-addressed objects in object storage: assets at `blobs/<sha256>`,
//! components at `components/<sha256>.wasm`. Identical content is stored once,
//! across builds and projects, and never rewritten, so a build's objects are
//! immutable once committed.

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, RetryConfig};
use object_store::{GetOptions, GetRange, GetResult, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_runtime::ComponentId;

/// Why an object operation failed; the text is for the operator.
#[derive(Debug, thiserror::Error)]
#[error("object store: {0}")]
pub struct BlobError(pub String);

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        BlobError(e.to_string())
    }
}

/// How long one object request (with its retries) may take.
const OBJECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where in S3 the objects are: `s3://<bucket>[/<prefix>][?endpoint=…&region=…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside it, so that one bucket can serve several
    /// deployments.
    pub prefix: Option<String>,
    /// A non-AWS endpoint (`https://<account>.r2.cloudflarestorage.com`,
    /// `http://minio:9000`); path-style requests are used with it.
    pub endpoint: Option<String>,
    /// The region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
}

/// The object store holding every build's content.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// For a local store: its root, so writes can be made durable (fsync),
    /// which object_store's local backend does not do.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BlobError(format!("cannot create {}: {e}", dir.display())))?;
        let root = dir
            .canonicalize()
            .map_err(|e| BlobError(format!("cannot resolve {}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(&root)?;
        Ok(BlobStore {
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// A store in an S3-compatible bucket (AWS S3, R2, MinIO, …), under
    /// `location.prefix`. Credentials and anything not in `location` come
    /// from the standard `AWS_*` environment variables, never from the
    /// configuration file, and are never logged.
    pub fn s3(location: &S3Location) -> Result<Self, BlobError> {
        Self::s3_with(AmazonS3Builder::from_env(), location)
    }

    /// [`Self::s3`] starting from `builder` instead of the environment.
    fn s3_with(builder: AmazonS3Builder, location: &S3Location) -> Result<Self, BlobError> {
        // reqwest's TLS uses the process's rustls provider: ring, as the
        // listeners do. Installing it twice is harmless (the first stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = builder
            .with_bucket_name(&location.bucket)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(OBJECT_TIMEOUT)
                    .with_connect_timeout(Duration::from_secs(5)),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: OBJECT_TIMEOUT,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &location.region {
            builder = builder.with_region(region);
        }
        let bucket = builder.build()?;
        let store: Arc<dyn ObjectStore> = match &location.prefix {
            Some(prefix) => Arc::new(PrefixStore::new(bucket, prefix.as_str())),
            None => Arc::new(bucket),
        };
        Ok(BlobStore {
            store,
            local_root: None,
        })
    }

    fn blob_path(hash: &str) -> ObjectPath {
        ObjectPath::from(format!("blobs/{hash}"))
    }

    fn component_path(id: &ComponentId) -> ObjectPath {
        ObjectPath::from(format!("components/{id}.wasm"))
    }

    /// Stores an asset under its hash unless it is there already.
    pub async fn put_blob(&self, hash: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.put_once(&Self::blob_path(hash), bytes).await
    }

    /// Stores a component's bytes unless they are there already.
    pub async fn put_component(&self, id: &ComponentId, bytes: Bytes) -> Result<(), BlobError> {
        self.put_once(&Self::component_path(id), bytes).await
    }

    /// A component's bytes.
    pub async fn component(&self, id: &ComponentId) -> Result<Bytes, BlobError> {
        Ok(self
            .store
            .get(&Self::component_path(id))
            .await?
            .bytes()
            .await?)
    }

    /// An asset, whole or a byte range of it.
    pub async fn get(&self, hash: &str, range: Option<Range<u64>>) -> Result<GetResult, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        Ok(self.store.get_opts(&Self::blob_path(hash), options).await?)
    }

    async fn put_once(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), BlobError> {
        match self.store.head(path).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.store.put(path, PutPayload::from(bytes)).await?;
        self.make_durable(path).await
    }

    /// Flushes a local object and its directory entry to disk.
    async fn make_durable(&self, path: &ObjectPath) -> Result<(), BlobError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(path.as_ref());
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            match file.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| BlobError(e.to_string()))?
        .map_err(|e| BlobError(format!("cannot sync an object to disk: {e}")))
    }

    /// Deletes objects that no build refers to. Objects younger than
    /// `min_age` are kept: a deploy in progress has written them but not
    /// committed its build yet. Returns how many were deleted.
    pub async fn collect_garbage(
        &self,
        referenced: &HashSet<String>,
        min_age: Duration,
    ) -> Result<usize, BlobError> {
        let cutoff = chrono_cutoff(min_age);
        let mut deleted = 0;
        for prefix in ["blobs", "components"] {
            let mut listing = self.store.list(Some(&ObjectPath::from(prefix)));
            let mut doomed = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                let name = meta.location.filename().unwrap_or_default();
                let key = name.strip_suffix(".wasm").unwrap_or(name);
                if !referenced.contains(key) && meta.last_modified < cutoff {
                    doomed.push(meta.location);
                }
            }
            for path in doomed {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(deleted)
    }
}

/// Now minus `age`, in the clock object_store uses for `last_modified`.
fn chrono_cutoff(age: Duration) -> chrono::DateTime<chrono::Utc> {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::zero());
    chrono::Utc::now() - age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_s3_bucket_stores_reads_ranges_and_collects_garbage() {
        let s3 = switchyard_test_services::shared_s3();
        s3.create_bucket("blobs-test");
        let location = S3Location {
            bucket: "blobs-test".into(),
            prefix: Some(format!("run-{}", rand::random::<u32>())),
            endpoint: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
        };
        // moto takes any credentials; production reads them from AWS_*.
        let credentials = AmazonS3Builder::new()
            .with_access_key_id("test")
            .with_secret_access_key("test");
        exercise(&BlobStore::s3_with(credentials, &location).unwrap()).await;
    }

    #[tokio::test]
    async fn a_directory_stores_reads_ranges_and_collects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&BlobStore::local(dir.path()).unwrap()).await;
    }

    async fn exercise(blobs: &BlobStore) {
        blobs
            .put_blob("aa", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        blobs
            .put_blob("aa", Bytes::from_static(b"ignored"))
            .await
            .unwrap();
        let whole = blobs.get("aa", None).await.unwrap().bytes().await.unwrap();
        assert_eq!(whole, "hello world");
        let part = blobs
            .get("aa", Some(6..11))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(part, "world");
        assert!(blobs.get("missing", None).await.is_err());

        let id = ComponentId::of(b"wasm");
        blobs
            .put_component(&id, Bytes::from_static(b"wasm"))
            .await
            .unwrap();
        blobs
            .put_blob("bb", Bytes::from_static(b"orphan"))
            .await
            .unwrap();
        let referenced: HashSet<String> = ["aa".to_string(), id.to_string()].into();

        // Young orphans survive (a deploy may still be writing them).
        assert_eq!(
            blobs
                .collect_garbage(&referenced, Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            blobs
                .collect_garbage(&referenced, Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(blobs.get("bb", None).await.is_err());
        assert!(blobs.get("aa", None).await.is_ok());
        assert_eq!(blobs.component(&id).await.unwrap(), "wasm");
    }
}
