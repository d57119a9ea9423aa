//! Which implementation holds each kind of shared state, chosen by the URLs
//! in `[storage]`, and opening them. Embedded (SQLite files and a local
//! object directory under `data_dir`, limits in memory) unless a URL points
//! at a shared engine: Redis, an S3-compatible bucket.

use crate::blobs::{BlobStore, S3Location};
use crate::config::Config;
use crate::store::{ControlStore, RedisControlStore, SqliteControlStore};
use crate::tenant::{LocalLimiter, RedisLimiter, RequestLimiter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchyard_runtime::backend::db::{
    DbBackend, DbError, PostgresGatewayDb, PostgresGatewayDbOptions, SqliteGatewayDb,
    SqliteGatewayDbOptions,
};
use switchyard_runtime::backend::kv::{KvBackend, RedisKv, SqliteKv};
use switchyard_runtime::backend::redis::RedisConn;

/// A SQLite file or a Redis server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A SQLite file on this node.
    Sqlite(PathBuf),
    /// A Redis server, by URL (which may hold a password).
    Redis(String),
}

/// Where projects' gateway databases are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbPlace {
    /// One SQLite file per project in a directory on this node.
    Sqlite(PathBuf),
    /// A PostgreSQL database, a schema per project, by URL (which may hold
    /// a password).
    Postgres(String),
}

/// Where assets and components are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectPlace {
    /// A directory on this node.
    Directory(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Location),
}

/// Where request limits are counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitsPlace {
    /// In this node's memory.
    Local,
    /// In Redis, shared by every node.
    Redis(String),
}

/// The resolved `[storage]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePlan {
    /// The control store.
    pub control: Place,
    /// Guests' kv data.
    pub kv: Place,
    /// Gateway databases.
    pub db: DbPlace,
    /// Assets and components.
    pub objects: ObjectPlace,
    /// Rate limits and quotas.
    pub rate_limits: LimitsPlace,
    redis_prefix: String,
    redis_timeout: Duration,
    objects_timeout: Duration,
    fail_open: bool,
}

impl StoragePlan {
    /// Resolves `config.storage`; the error names the setting and what it
    /// accepts.
    pub fn new(config: &Config) -> Result<StoragePlan, String> {
        let storage = &config.storage;
        let data = &config.data_dir;
        let control = place(
            "storage.control",
            storage.control.as_deref(),
            &data.join("control.sqlite"),
        )?;
        let kv = place("storage.kv", storage.kv.as_deref(), &data.join("kv.sqlite"))?;
        let db = match storage.db.as_deref() {
            None | Some("sqlite://") => DbPlace::Sqlite(data.join("db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DbPlace::Postgres(url.to_owned())
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(dir) if dir.starts_with('/') => DbPlace::Sqlite(PathBuf::from(dir)),
                _ => {
                    return Err("storage.db must be sqlite:// (the default directory), sqlite:///absolute/dir or a postgres:// URL".into());
                }
            },
        };
        let objects = match storage.objects.as_deref() {
            None => ObjectPlace::Directory(data.join("objects")),
            Some(url) => objects(url)?,
        };
        let rate_limits = match storage.rate_limits.as_deref() {
            None | Some("local") => LimitsPlace::Local,
            Some(url) if url.starts_with("redis://") => LimitsPlace::Redis(url.to_owned()),
            Some(_) => {
                return Err("storage.rate_limits must be `local` or a redis:// URL".into());
            }
        };
        let prefix = &storage.redis_prefix;
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !prefix_ok {
            return Err("storage.redis_prefix must be 1 to 64 of [A-Za-z0-9_-]".into());
        }
        if storage.redis_timeout_ms == 0 {
            return Err("storage.redis_timeout_ms must be at least 1".into());
        }
        if storage.objects_timeout_ms == 0 {
            return Err("storage.objects_timeout_ms must be at least 1".into());
        }
        Ok(StoragePlan {
            control,
            kv,
            db,
            objects,
            rate_limits,
            redis_prefix: prefix.clone(),
            redis_timeout: Duration::from_millis(storage.redis_timeout_ms),
            objects_timeout: Duration::from_millis(storage.objects_timeout_ms),
            fail_open: storage.rate_limits_fail_open,
        })
    }

    /// One line per kind of state, for the startup log: passwords and
    /// credentials left out.
    pub fn describe(&self) -> String {
        let place = |p: &Place| match p {
            Place::Sqlite(path) => format!("sqlite {}", path.display()),
            Place::Redis(url) => format!("redis {}", redact(url)),
        };
        let objects = match &self.objects {
            ObjectPlace::Directory(dir) => format!("directory {}", dir.display()),
            ObjectPlace::S3(s3) => format!(
                "s3 bucket {}{}",
                s3.bucket,
                s3.prefix
                    .as_deref()
                    .map(|p| format!(" prefix {p}"))
                    .unwrap_or_default()
            ),
        };
        let db = match &self.db {
            DbPlace::Sqlite(dir) => format!("sqlite files in {}", dir.display()),
            DbPlace::Postgres(url) => format!("postgres {}", redact(url)),
        };
        let limits = match &self.rate_limits {
            LimitsPlace::Local => "this node".to_owned(),
            LimitsPlace::Redis(url) => format!("redis {}", redact(url)),
        };
        format!(
            "control: {}; kv: {}; db: {db}; objects: {objects}; rate limits: {limits}",
            place(&self.control),
            place(&self.kv)
        )
    }

    /// What is wrong for a cluster: with a shared control store, every
    /// kind of state a guest or a request can see on one node must be
    /// shared too, or nodes disagree.
    pub fn cluster_warnings(&self) -> Vec<&'static str> {
        if !matches!(self.control, Place::Redis(_)) {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        if matches!(self.kv, Place::Sqlite(_)) {
            warnings.push("the control store is shared but kv data is on this node: guests on other nodes will not see it (set storage.kv to a redis:// URL)");
        }
        if matches!(self.db, DbPlace::Sqlite(_)) {
            warnings.push("the control store is shared but gateway databases are on this node: guests on other nodes will not see their rows (set storage.db to a postgres:// URL)");
        }
        if matches!(self.objects, ObjectPlace::Directory(_)) {
            warnings.push("the control store is shared but objects are on this node: builds deployed through other nodes cannot be served here (set storage.objects to an s3:// URL)");
        }
        if self.rate_limits == LimitsPlace::Local {
            warnings.push("the control store is shared but rate limits are counted per node: each node admits the full rate (set storage.rate_limits to a redis:// URL)");
        }
        warnings
    }

    /// Opens the control store (a Redis one must answer now).
    pub async fn control_store(&self) -> Result<Arc<dyn ControlStore>, String> {
        Ok(match &self.control {
            Place::Sqlite(path) => {
                Arc::new(SqliteControlStore::open(path).map_err(|e| e.to_string())?)
            }
            Place::Redis(url) => Arc::new(
                RedisControlStore::connect(url, &self.redis_prefix, self.redis_timeout)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        })
    }

    /// Opens the kv backend (a Redis one connects on first use).
    pub fn kv(&self) -> Result<Arc<dyn KvBackend>, String> {
        Ok(match &self.kv {
            Place::Sqlite(path) => Arc::new(SqliteKv::open(path).map_err(|e| e.to_string())?),
            Place::Redis(url) => Arc::new(RedisKv::new(self.redis(url)?, &self.redis_prefix)),
        })
    }

    /// Opens the gateway databases (PostgreSQL must answer now).
    pub async fn db(&self) -> Result<Arc<dyn DbBackend>, String> {
        Ok(match &self.db {
            DbPlace::Sqlite(dir) => Arc::new(
                SqliteGatewayDb::open(dir, SqliteGatewayDbOptions::default())
                    .map_err(|e| unavailable_detail(&e))?,
            ),
            DbPlace::Postgres(url) => Arc::new(
                PostgresGatewayDb::connect(url, PostgresGatewayDbOptions::default())
                    .await
                    .map_err(|e| unavailable_detail(&e))?,
            ),
        })
    }

    /// Opens object storage.
    pub fn objects(&self) -> Result<BlobStore, String> {
        match &self.objects {
            ObjectPlace::Directory(dir) => BlobStore::local(dir),
            ObjectPlace::S3(location) => BlobStore::s3(location),
        }
        .map(|store| store.with_timeout(self.objects_timeout))
        .map_err(|e| e.to_string())
    }

    /// Opens the rate limiter.
    pub fn limiter(&self) -> Result<Arc<dyn RequestLimiter>, String> {
        Ok(match &self.rate_limits {
            LimitsPlace::Local => Arc::new(LocalLimiter::default()),
            LimitsPlace::Redis(url) => Arc::new(RedisLimiter::new(
                self.redis(url)?,
                &self.redis_prefix,
                self.fail_open,
            )),
        })
    }

    fn redis(&self, url: &str) -> Result<RedisConn, String> {
        RedisConn::open(url, self.redis_timeout, None).map_err(|e| e.to_string())
    }
}

/// The operator's detail of a gateway database error.
fn unavailable_detail(e: &DbError) -> String {
    match e {
        DbError::Unavailable { detail } => detail.clone(),
        other => other.to_string(),
    }
}

/// `sqlite://` (the default file), `sqlite:///abs/path`, or `redis://…`.
fn place(setting: &str, url: Option<&str>, default: &Path) -> Result<Place, String> {
    let Some(url) = url else {
        return Ok(Place::Sqlite(default.to_owned()));
    };
    if url.starts_with("redis://") {
        return Ok(Place::Redis(url.to_owned()));
    }
    match url.strip_prefix("sqlite://") {
        Some("") => Ok(Place::Sqlite(default.to_owned())),
        Some(path) if path.starts_with('/') => Ok(Place::Sqlite(PathBuf::from(path))),
        _ => Err(format!(
            "{setting} must be sqlite:// (the default file), sqlite:///absolute/path or a redis:// URL"
        )),
    }
}

fn objects(url: &str) -> Result<ObjectPlace, String> {
    if let Some(path) = url.strip_prefix("file://") {
        return if path.starts_with('/') {
            Ok(ObjectPlace::Directory(PathBuf::from(path)))
        } else {
            Err(
                "storage.objects: a file:// URL needs an absolute path (file:///srv/objects)"
                    .into(),
            )
        };
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err("storage.objects must be a file:// or s3:// URL".into());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(format!(
            "storage.objects: `{bucket}` is not a valid bucket name (3 to 63 of [a-z0-9.-])"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..") {
        return Err("storage.objects: the key prefix may not contain `.` or `..`".into());
    }
    let mut location = S3Location {
        bucket: bucket.to_owned(),
        prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
        endpoint: None,
        region: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("endpoint", value))
                if value.starts_with("http://") || value.starts_with("https://") =>
            {
                location.endpoint = Some(value.to_owned());
            }
            Some(("region", value)) if !value.is_empty() => {
                location.region = Some(value.to_owned());
            }
            _ => {
                // Name the option only: its value may be a secret.
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                return Err(format!(
                    "storage.objects: unknown or invalid option `{name}` (allowed: endpoint=http(s)://…, region=…; credentials come from AWS_* variables)"
                ));
            }
        }
    }
    Ok(ObjectPlace::S3(location))
}

/// A URL without its user, password and query (which may hold a
/// `password=` too).
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => "(invalid URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(set: impl FnOnce(&mut crate::config::StorageConfig)) -> Result<StoragePlan, String> {
        let mut config = Config {
            data_dir: PathBuf::from("/data"),
            ..Config::default()
        };
        set(&mut config.storage);
        StoragePlan::new(&config)
    }

    #[test]
    fn embedded_by_default_and_shared_by_url() {
        let embedded = plan(|_| {}).unwrap();
        assert_eq!(
            embedded.control,
            Place::Sqlite("/data/control.sqlite".into())
        );
        assert_eq!(embedded.kv, Place::Sqlite("/data/kv.sqlite".into()));
        assert_eq!(embedded.db, DbPlace::Sqlite("/data/db".into()));
        assert_eq!(
            embedded.objects,
            ObjectPlace::Directory("/data/objects".into())
        );
        assert_eq!(embedded.rate_limits, LimitsPlace::Local);

        let shared = plan(|s| {
            s.control = Some("redis://:pw@cache:6379/1".into());
            s.kv = Some("redis://cache:6379/2".into());
            s.objects =
                Some("s3://my-bucket/prod/eu?endpoint=http://minio:9000&region=eu-west-1".into());
            s.rate_limits = Some("redis://cache".into());
            s.db = Some("postgres://app:secret@pg/switchyard?password=other".into());
        })
        .unwrap();
        assert_eq!(
            shared.db,
            DbPlace::Postgres("postgres://app:secret@pg/switchyard?password=other".into())
        );
        assert!(shared.cluster_warnings().is_empty());
        assert_eq!(
            shared.control,
            Place::Redis("redis://:pw@cache:6379/1".into())
        );
        assert_eq!(
            shared.objects,
            ObjectPlace::S3(S3Location {
                bucket: "my-bucket".into(),
                prefix: Some("prod/eu".into()),
                endpoint: Some("http://minio:9000".into()),
                region: Some("eu-west-1".into()),
            })
        );
        let described = shared.describe();
        assert!(
            described.contains("redis redis://cache:6379/1"),
            "{described}"
        );
        assert!(!described.contains("pw"), "passwords stay out of logs");
        assert!(!described.contains("secret"), "passwords stay out of logs");
        assert!(!described.contains("other"), "query passwords too");

        let explicit = plan(|s| {
            s.kv = Some("sqlite:///var/kv.db".into());
            s.objects = Some("file:///srv/objects".into());
        })
        .unwrap();
        assert_eq!(explicit.kv, Place::Sqlite("/var/kv.db".into()));
        assert_eq!(
            explicit.objects,
            ObjectPlace::Directory("/srv/objects".into())
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_what_is_accepted() {
        let refused = [
            plan(|s| s.control = Some("postgres://db".into())),
            plan(|s| s.kv = Some("sqlite://relative.db".into())),
            plan(|s| s.db = Some("mysql://db".into())),
            plan(|s| s.objects = Some("gs://bucket".into())),
            plan(|s| s.objects = Some("file://relative".into())),
            plan(|s| s.objects = Some("s3://Bad_Bucket".into())),
            plan(|s| s.objects = Some("s3://bucket/../up".into())),
            plan(|s| s.objects = Some("s3://bucket?secret_access_key=x".into())),
            plan(|s| s.rate_limits = Some("memcached://x".into())),
            plan(|s| s.redis_prefix = "a:b".into()),
            plan(|s| s.redis_timeout_ms = 0),
        ];
        for result in refused {
            let message = result.unwrap_err();
            assert!(message.starts_with("storage."), "{message}");
        }
    }
}
