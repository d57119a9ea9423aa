//! The control store: projects, hostnames, builds and the active build
//! pointer, env, limits, deploy tokens, API keys and certificates. One trait, so the
//! embedded SQLite store and a shared one (for many nodes) are
//! interchangeable; every write is announced on [`ControlStore::subscribe`]
//! so caches (routes, certificates) drop what changed.

#[cfg(test)]
pub(crate) mod contract;
mod redis;
mod sqlite;

pub use redis::RedisControlStore;
pub use sqlite::SqliteControlStore;

use crate::build::BuildRecord;
use crate::hostname::Hostname;
use serde::{Deserialize, Serialize};
use switchyard_runtime::{BuildId, LimitsOverride, ProjectId};
use tokio::sync::broadcast;

/// A project and its settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Project {
    /// Its id (also `<id>.<base_domain>`).
    pub id: ProjectId,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Suspended projects answer 503 `PROJECT_SUSPENDED`.
    pub suspended: bool,
    /// The build being served, if any.
    pub active_build: Option<BuildId>,
    /// Variables set through the admin API.
    pub env: Vec<EnvVar>,
    /// Limits set by the operator.
    pub settings: ProjectSettings,
}

/// An environment variable of a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// `[A-Z][A-Z0-9_]{0,63}`, not `SWITCHYARD_*`.
    pub name: String,
    /// The value. Never returned by the API when `secret`.
    pub value: String,
    /// Whether the value is hidden from API reads.
    pub secret: bool,
}

/// Per-project limits set by the operator; unset fields use the server's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectSettings {
    /// Sandbox limits (see the runtime's `Limits`).
    pub sandbox: LimitsOverride,
    /// Sustained requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Burst above the sustained rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests per UTC day; 0 for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_requests: Option<u64>,
    /// Origins whose pages may call the database gateway
    /// (`https://app.example.com`, or `*` for any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
}

/// A hostname routed to a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostnameRecord {
    /// The name (possibly `*.` wildcard).
    pub hostname: Hostname,
    /// The project it routes to.
    pub project: ProjectId,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A project-scoped deploy token, as stored: its secret only hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (part of the token string).
    pub id: String,
    /// The only project it may act on.
    pub project: ProjectId,
    /// A label for people.
    pub name: String,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What a project API key may do on the HTTP database gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// For browsers: `client_read` / `client_write` columns only, never
    /// sensitive ones.
    Public,
    /// For the project's servers: every column of its tables.
    Server,
}

impl KeyKind {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Public => "public",
            KeyKind::Server => "server",
        }
    }
}

/// A project API key, as stored: its secret only hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id (part of the key string).
    pub id: String,
    /// The only project it opens.
    pub project: ProjectId,
    /// Public or server.
    pub kind: KeyKind,
    /// A label for people.
    pub name: String,
    /// SHA-256 of the secret part, hex.
    pub secret_hash: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A TLS certificate uploaded for a hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    /// The SNI name it is served for (possibly a wildcard).
    pub hostname: Hostname,
    /// PEM certificate chain.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What changed, announced after every committed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Anything about one project (settings, env, builds, pointer, hostnames).
    Project(ProjectId),
    /// The certificate set.
    Certificates,
    /// Anything: changes may have been missed (a shared store's
    /// subscription was re-made), so drop everything cached.
    All,
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("not found")]
    NotFound,
    /// The write conflicts with existing state; the code names how.
    #[error("{message}")]
    Conflict {
        /// A stable code: `PROJECT_EXISTS`, `HOSTNAME_TAKEN`, `DEPLOY_IN_PROGRESS`.
        code: &'static str,
        /// For the caller.
        message: String,
    },
    /// The store failed; the text is for the operator.
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the store is full; the text is for the operator.
    #[error("control store: the disk is full: {0}")]
    StorageFull(String),
}

/// A page of a list, with the cursor of the next page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// The control plane's state. See the module docs.
#[async_trait::async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// Changes committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Creates a project; `Conflict(PROJECT_EXISTS)` if it exists.
    async fn create_project(&self, id: &ProjectId) -> Result<Project, StoreError>;
    /// One project.
    async fn project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError>;
    /// Projects by id, `limit` at a time, after the cursor.
    async fn projects(&self, after: Option<&str>, limit: u32) -> Result<Page<Project>, StoreError>;
    /// Deletes a project with its hostnames, builds, env and tokens.
    async fn delete_project(&self, id: &ProjectId) -> Result<bool, StoreError>;
    /// Suspends or resumes.
    async fn set_suspended(&self, id: &ProjectId, suspended: bool) -> Result<(), StoreError>;
    /// Sets (adds or replaces) variables.
    async fn set_env(&self, id: &ProjectId, vars: &[EnvVar]) -> Result<(), StoreError>;
    /// Removes a variable; whether it existed.
    async fn unset_env(&self, id: &ProjectId, name: &str) -> Result<bool, StoreError>;
    /// Replaces the project's settings.
    async fn set_settings(
        &self,
        id: &ProjectId,
        settings: &ProjectSettings,
    ) -> Result<(), StoreError>;

    /// Routes `hostname` to `project`; `Conflict(HOSTNAME_TAKEN)` if it
    /// routes anywhere already.
    async fn add_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<HostnameRecord, StoreError>;
    /// Removes a hostname of `project`; whether it was there.
    async fn remove_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<bool, StoreError>;
    /// The hostnames of `project`.
    async fn hostnames(&self, project: &ProjectId) -> Result<Vec<HostnameRecord>, StoreError>;
    /// The project `host` (normalised, not a wildcard) routes to: an exact
    /// match first, else the wildcard one label up.
    async fn resolve_hostname(&self, host: &str) -> Result<Option<ProjectId>, StoreError>;

    /// Takes the project's deploy lease for `holder`, or
    /// `Conflict(DEPLOY_IN_PROGRESS)` if another holder has an unexpired one.
    async fn begin_deploy(
        &self,
        project: &ProjectId,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError>;
    /// Releases the lease if `holder` has it.
    async fn end_deploy(&self, project: &ProjectId, holder: &str) -> Result<(), StoreError>;
    /// Releases every lease whose holder starts with `prefix` (a restarted
    /// node clearing its own): deploy leases, object writers, collections.
    async fn release_deploys(&self, holder_prefix: &str) -> Result<(), StoreError>;
    /// Records a build and, in the same transaction, makes it the active one
    /// — if `holder` still holds the project's deploy lease; otherwise
    /// `Conflict(DEPLOY_LEASE_LOST)` and nothing changes.
    async fn commit_build(&self, build: &BuildRecord, holder: &str) -> Result<(), StoreError>;
    /// One build.
    async fn build(
        &self,
        project: &ProjectId,
        id: &BuildId,
    ) -> Result<Option<BuildRecord>, StoreError>;
    /// The builds of a project, newest first, after the cursor.
    async fn builds(
        &self,
        project: &ProjectId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<BuildRecord>, StoreError>;
    /// Points the project at an existing build.
    async fn activate_build(&self, project: &ProjectId, id: &BuildId) -> Result<(), StoreError>;
    /// Deletes all but the newest `keep` builds (never the active one);
    /// returns what it deleted.
    async fn prune_builds(
        &self,
        project: &ProjectId,
        keep: usize,
    ) -> Result<Vec<BuildRecord>, StoreError>;
    /// Every blob hash and component id that any build refers to.
    async fn referenced_objects(&self) -> Result<std::collections::HashSet<String>, StoreError>;

    /// Registers `holder` as a writer of objects (a deploy from storing its
    /// first object to committing its build), for `ttl_ms` at most;
    /// `Conflict(COLLECTION_IN_PROGRESS)` while a garbage collection holds
    /// the objects. Together with [`Self::begin_collection`] this is a
    /// readers–writer lock over object storage shared by every node: a
    /// deploy that found an object already stored relies on it staying.
    async fn begin_object_writes(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError>;
    /// Ends `holder`'s registration.
    async fn end_object_writes(&self, holder: &str) -> Result<(), StoreError>;
    /// Takes the objects for a garbage collection by `holder`, for `ttl_ms`
    /// at most: `Conflict(OBJECT_WRITES_IN_PROGRESS)` while any writer is
    /// registered, `Conflict(COLLECTION_IN_PROGRESS)` while another
    /// collection holds them.
    async fn begin_collection(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError>;
    /// Ends `holder`'s collection.
    async fn end_collection(&self, holder: &str) -> Result<(), StoreError>;

    /// Stores a deploy token.
    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// A token by id.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// The tokens of a project.
    async fn tokens(&self, project: &ProjectId) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token of `project`; whether it existed.
    async fn revoke_token(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError>;

    /// Stores a project API key.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// An API key by id.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// The API keys of a project.
    async fn api_keys(&self, project: &ProjectId) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes an API key of `project`; whether it existed.
    async fn revoke_api_key(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError>;

    /// Stores (or replaces) the certificate for a hostname.
    async fn put_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError>;
    /// Every uploaded certificate.
    async fn certificates(&self) -> Result<Vec<CertificateRecord>, StoreError>;
    /// Removes a certificate; whether it existed.
    async fn delete_certificate(&self, hostname: &Hostname) -> Result<bool, StoreError>;
}

/// Object writes wait while a garbage collection holds the objects.
pub(crate) fn collection_in_progress() -> StoreError {
    StoreError::Conflict {
        code: "COLLECTION_IN_PROGRESS",
        message: "a garbage collection of stored objects is in progress".into(),
    }
}

/// A garbage collection waits while deploys are storing objects.
pub(crate) fn object_writes_in_progress() -> StoreError {
    StoreError::Conflict {
        code: "OBJECT_WRITES_IN_PROGRESS",
        message: "deploys are storing objects".into(),
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}
