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
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_runtime::ComponentId;

/// Why an object operation failed; the text is for the operator.
#[derive(Debug, thiserror::Error)]
#[error("object store: {message}")]
pub struct BlobError {
    message: String,
    /// The local disk holding the objects is full (never set for S3,
    /// which reports no such thing).
    pub storage_full: bool,
}

impl BlobError {
    fn new(message: String) -> Self {
        BlobError {
            message,
            storage_full: false,
        }
    }

    fn io(context: &str, e: &std::io::Error) -> Self {
        BlobError {
            message: format!("{context}: {e}"),
            storage_full: switchyard_runtime::disk::is_full(e),
        }
    }
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        BlobError {
            message: e.to_string(),
            storage_full: switchyard_runtime::disk::is_full(&e),
        }
    }
}

/// How long one object request (with its retries) may take.
const OBJECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an asset being streamed to a client may stall between two
/// reads. Streams have no overall deadline: a large asset sent to a slow
/// client may take as long as the client's connection allows.
const STREAM_STALL_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// The same objects, for streaming assets to clients: a read timeout
    /// instead of `store`'s whole-request one.
    streams: Arc<dyn ObjectStore>,
    /// For a local store: its root, so writes can be made durable (fsync),
    /// which object_store's local backend does not do.
    local_root: Option<PathBuf>,
    /// Deadline of one request (with its retries), and of an asset
    /// stream's first response: a store that hangs must not hold a client
    /// or a deploy forever.
    timeout: Duration,
}

/// Wraps the object store a node opens (for instrumentation, or to inject
/// faults in tests): the store in, the store to use out.
pub type ObjectStoreLayer = Arc<dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync>;

impl BlobStore {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BlobError::io(&format!("cannot create {}", dir.display()), &e))?;
        let root = dir
            .canonicalize()
            .map_err(|e| BlobError::io(&format!("cannot resolve {}", dir.display()), &e))?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&root)?);
        Ok(BlobStore {
            streams: store.clone(),
            store,
            local_root: Some(root),
            timeout: OBJECT_TIMEOUT,
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
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: OBJECT_TIMEOUT,
                ..RetryConfig::default()
            });
        // Client options are set whole, so plain HTTP is allowed on them.
        let mut client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
        if let Some(endpoint) = &location.endpoint {
            client = client.with_allow_http(endpoint.starts_with("http://"));
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &location.region {
            builder = builder.with_region(region);
        }
        let bucket = builder
            .clone()
            .with_client_options(client.clone().with_timeout(OBJECT_TIMEOUT))
            .build()?;
        let streaming = builder
            .with_client_options(
                client
                    .with_timeout_disabled()
                    .with_read_timeout(STREAM_STALL_TIMEOUT),
            )
            .build()?;
        let under_prefix = |bucket: object_store::aws::AmazonS3| -> Arc<dyn ObjectStore> {
            match &location.prefix {
                Some(prefix) => Arc::new(PrefixStore::new(bucket, prefix.as_str())),
                None => Arc::new(bucket),
            }
        };
        Ok(BlobStore {
            store: under_prefix(bucket),
            streams: under_prefix(streaming),
            local_root: None,
            timeout: OBJECT_TIMEOUT,
        })
    }

    /// The same store with `timeout` as every request's deadline (default
    /// 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same store seen through `layer`.
    pub fn layered(mut self, layer: &ObjectStoreLayer) -> Self {
        self.store = layer(self.store);
        self.streams = layer(self.streams);
        self
    }

    /// Runs `op` under the request deadline.
    async fn within<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, BlobError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BlobError::new(format!(
                "{what} took longer than {} ms",
                self.timeout.as_millis()
            ))),
        }
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
        let path = Self::component_path(id);
        self.within("reading a component", async {
            self.store.get(&path).await?.bytes().await
        })
        .await
    }

    /// An asset, whole or a byte range of it.
    pub async fn get(&self, hash: &str, range: Option<Range<u64>>) -> Result<GetResult, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let path = Self::blob_path(hash);
        self.within("reading an asset", self.streams.get_opts(&path, options))
            .await
    }

    async fn put_once(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), BlobError> {
        let stored = self
            .within("writing an object", async {
                match self.store.head(path).await {
                    Ok(_) => return Ok(true),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.store.put(path, PutPayload::from(bytes)).await?;
                Ok(false)
            })
            .await?;
        if stored {
            return Ok(());
        }
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
        .map_err(|e| BlobError::new(e.to_string()))?
        .map_err(|e| BlobError::io("cannot sync an object to disk", &e))
    }

    /// Every stored object last written more than `min_age` ago.
    pub async fn objects_older_than(
        &self,
        min_age: Duration,
    ) -> Result<Vec<StoredObject>, BlobError> {
        let cutoff = chrono_cutoff(min_age);
        let mut old = Vec::new();
        for prefix in ["blobs", "components"] {
            let mut listing = self.store.list(Some(&ObjectPath::from(prefix)));
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                if meta.last_modified >= cutoff {
                    continue;
                }
                let name = meta.location.filename().unwrap_or_default();
                let key = name.strip_suffix(".wasm").unwrap_or(name).to_owned();
                old.push(StoredObject {
                    key,
                    path: meta.location,
                });
            }
        }
        Ok(old)
    }

    /// Deletes an object (gone already is fine).
    pub async fn delete(&self, object: &StoredObject) -> Result<(), BlobError> {
        self.within("deleting an object", async {
            match self.store.delete(&object.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// An object found in storage.
#[derive(Clone, Debug)]
pub struct StoredObject {
    /// What builds refer to it by: an asset's hash or a component's id.
    pub key: String,
    path: ObjectPath,
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
    async fn an_s3_bucket_stores_reads_ranges_lists_and_deletes() {
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
    async fn a_directory_stores_reads_ranges_lists_and_deletes() {
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
        // Young objects are not listed (a deploy may still be writing them).
        let old = blobs
            .objects_older_than(Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(old.is_empty());
        let mut all: Vec<String> = blobs
            .objects_older_than(Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        all.sort();
        let mut expected = ["aa".to_string(), "bb".to_string(), id.to_string()];
        expected.sort();
        assert_eq!(all, expected);
        for object in blobs.objects_older_than(Duration::ZERO).await.unwrap() {
            if object.key == "bb" {
                blobs.delete(&object).await.unwrap();
                blobs.delete(&object).await.unwrap();
            }
        }
        assert!(blobs.get("bb", None).await.is_err());
        assert!(blobs.get("aa", None).await.is_ok());
        assert_eq!(blobs.component(&id).await.unwrap(), "wasm");
    }
}
