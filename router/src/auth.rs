//! Who is calling the admin API.
//!
//! Two kinds of bearer token:
//! - the admin token (`sya_…`): from the config, a file, or generated on first
//!   start into `<data_dir>/admin-token` (mode 0600). It may do anything.
//! - deploy tokens (`syd_<id>_<secret>`): created per project through the
//!   API, shown once, stored as the SHA-256 of the secret. They act on their
//!   own project only.
//!
//! Comparisons are constant-time; tokens are never logged.

use crate::config::AdminConfig;
use crate::error::ApiError;
use crate::store::{ApiKeyRecord, ControlStore, KeyKind, TokenRecord, now_ms};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use switchyard_runtime::ProjectId;

const ADMIN_PREFIX: &str = "sya_";
const DEPLOY_PREFIX: &str = "syd_";
const PUBLIC_KEY_PREFIX: &str = "sypk_";
const SERVER_KEY_PREFIX: &str = "sysk_";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: everything.
    Admin,
    /// A deploy token: one project.
    Project(ProjectId),
}

impl Principal {
    /// Refuses unless this principal may act on `project`. A project token
    /// asking about another project gets 404, as if it did not exist.
    pub fn require_project(&self, project: &ProjectId) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Project(own) if own == project => Ok(()),
            Principal::Project(_) => Err(ApiError::NotFound("project")),
        }
    }

    /// Refuses unless this is the admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Project(_) => Err(ApiError::Forbidden),
        }
    }
}

/// Checks bearer tokens.
pub struct Authenticator {
    admin_hash: [u8; 32],
    store: Arc<dyn ControlStore>,
}

impl Authenticator {
    /// Authenticates with `admin_token` as the admin's.
    pub fn new(admin_token: &str, store: Arc<dyn ControlStore>) -> Self {
        Authenticator {
            admin_hash: sha256(admin_token.as_bytes()),
            store,
        }
    }

    /// The principal behind the request's `Authorization: Bearer` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if let Some(rest) = token.strip_prefix(DEPLOY_PREFIX) {
            let (id, secret) = rest.split_once('_').ok_or(ApiError::Unauthorized)?;
            if id.is_empty() || id.len() > 64 {
                return Err(ApiError::Unauthorized);
            }
            let record = self.store.token(id).await?.ok_or(ApiError::Unauthorized)?;
            let stored = hex::decode(&record.secret_hash).map_err(|_| ApiError::Unauthorized)?;
            if bool::from(sha256(secret.as_bytes()).ct_eq(stored.as_slice())) {
                return Ok(Principal::Project(record.project));
            }
            return Err(ApiError::Unauthorized);
        }
        if bool::from(sha256(token.as_bytes()).ct_eq(&self.admin_hash)) {
            Ok(Principal::Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// A new deploy token for `project`: the string to show once, and the record
/// to store.
pub fn new_deploy_token(project: &ProjectId, name: &str) -> (String, TokenRecord) {
    let id = random_hex(8);
    let secret = random_hex(24);
    let token = format!("{DEPLOY_PREFIX}{id}_{secret}");
    let record = TokenRecord {
        id,
        project: project.clone(),
        name: name.to_owned(),
        secret_hash: hex::encode(sha256(secret.as_bytes())),
        created_at: now_ms(),
    };
    (token, record)
}

/// A new project API key: the string to show once (`sypk_<id>_<secret>`
/// for public keys, `sysk_…` for server keys), and the record to store.
pub fn new_api_key(project: &ProjectId, kind: KeyKind, name: &str) -> (String, ApiKeyRecord) {
    let id = random_hex(8);
    let secret = random_hex(24);
    let prefix = match kind {
        KeyKind::Public => PUBLIC_KEY_PREFIX,
        KeyKind::Server => SERVER_KEY_PREFIX,
    };
    let key = format!("{prefix}{id}_{secret}");
    let record = ApiKeyRecord {
        id,
        project: project.clone(),
        kind,
        name: name.to_owned(),
        secret_hash: hex::encode(sha256(secret.as_bytes())),
        created_at: now_ms(),
    };
    (key, record)
}

/// What `key` may do, checked against `keys` — the API keys of the project
/// being asked, so a key of any other project (or a revoked or malformed
/// one) is `None`. The secret is compared in constant time.
pub fn check_api_key(keys: &[ApiKeyRecord], key: &str) -> Option<KeyKind> {
    let (kind, rest) = if let Some(rest) = key.strip_prefix(PUBLIC_KEY_PREFIX) {
        (KeyKind::Public, rest)
    } else {
        (KeyKind::Server, key.strip_prefix(SERVER_KEY_PREFIX)?)
    };
    let (id, secret) = rest.split_once('_')?;
    let record = keys.iter().find(|k| k.id == id && k.kind == kind)?;
    let stored = hex::decode(&record.secret_hash).ok()?;
    bool::from(sha256(secret.as_bytes()).ct_eq(stored.as_slice())).then_some(kind)
}

/// Where the admin token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// Set in the configuration.
    Config,
    /// Read from this file.
    File(PathBuf),
    /// Generated now and written to this file.
    Generated(PathBuf),
}

/// The admin token: from the config, else the configured file, else
/// `<data_dir>/admin-token`, generating it there (0600) if missing.
pub fn admin_token(
    config: &AdminConfig,
    data_dir: &Path,
) -> Result<(String, AdminTokenSource), std::io::Error> {
    if let Some(token) = &config.token {
        check_admin_token(token, "admin.token")?;
        return Ok((token.clone(), AdminTokenSource::Config));
    }
    let path = config
        .token_file
        .clone()
        .unwrap_or_else(|| data_dir.join("admin-token"));
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            check_admin_token(token.trim(), &path.display().to_string())?;
            return Ok((token.trim().to_owned(), AdminTokenSource::File(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if config.token_file.is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("admin.token_file {} is missing or empty", path.display()),
        ));
    }
    let token = format!("{ADMIN_PREFIX}{}", random_hex(32));
    write_private(&path, &token)?;
    Ok((token, AdminTokenSource::Generated(path)))
}

/// Shortest admin token accepted from the configuration.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Refuses an admin token that is guessable or could never authenticate
/// (the deploy-token prefix routes it to the deploy-token check).
fn check_admin_token(token: &str, origin: &str) -> std::io::Result<()> {
    let refuse = |why: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    if token.starts_with(DEPLOY_PREFIX) {
        return refuse(format!(
            "the admin token in {origin} starts with `{DEPLOY_PREFIX}`, which deploy tokens use"
        ));
    }
    if token.chars().count() < MIN_ADMIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
        return refuse(format!(
            "the admin token in {origin} must be at least {MIN_ADMIN_TOKEN_CHARS} characters, without spaces"
        ));
    }
    Ok(())
}

/// Writes `content` to a new file readable by its owner only.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_open_only_their_project_and_kind() {
        let project = ProjectId::new("shop").unwrap();
        let (public, public_record) = new_api_key(&project, KeyKind::Public, "web");
        let (server, server_record) = new_api_key(&project, KeyKind::Server, "api");
        assert!(public.starts_with("sypk_") && server.starts_with("sysk_"));
        assert_ne!(
            public_record.secret_hash,
            public.rsplit('_').next().unwrap()
        );
        let keys = [public_record.clone(), server_record.clone()];
        assert_eq!(check_api_key(&keys, &public), Some(KeyKind::Public));
        assert_eq!(check_api_key(&keys, &server), Some(KeyKind::Server));
        // Another project's keys, a revoked key, a forged kind, a wrong
        // secret, garbage.
        assert_eq!(check_api_key(&[], &public), None);
        assert_eq!(
            check_api_key(std::slice::from_ref(&server_record), &public),
            None
        );
        assert_eq!(
            check_api_key(&keys, &public.replacen("sypk_", "sysk_", 1)),
            None
        );
        let mut wrong = public.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(check_api_key(&keys, &wrong), None);
        for garbage in [
            "",
            "sypk_",
            "sypk__",
            "sypk_x",
            &format!("sya_{}", &public[5..]),
        ] {
            assert_eq!(check_api_key(&keys, garbage), None, "{garbage}");
        }
    }
    use crate::store::SqliteControlStore;
    use http::HeaderValue;
    use std::os::unix::fs::PermissionsExt;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn generates_a_private_admin_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let (token, source) = admin_token(&AdminConfig::default(), dir.path()).unwrap();
        let path = dir.path().join("admin-token");
        assert_eq!(source, AdminTokenSource::Generated(path.clone()));
        assert!(token.starts_with("sya_") && token.len() == 68);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, source) = admin_token(&AdminConfig::default(), dir.path()).unwrap();
        assert_eq!((again, source), (token, AdminTokenSource::File(path)));
        let configured = |token: &str| AdminConfig {
            token: Some(token.into()),
            ..AdminConfig::default()
        };
        assert_eq!(
            admin_token(&configured("from-config-0123456"), dir.path())
                .unwrap()
                .0,
            "from-config-0123456"
        );
        for refused in ["short", "syd_0123456789abcdef", "with spaces 0123456789"] {
            assert!(
                admin_token(&configured(refused), dir.path()).is_err(),
                "{refused}"
            );
        }
        let missing = AdminConfig {
            token_file: Some(dir.path().join("nope")),
            ..AdminConfig::default()
        };
        assert!(admin_token(&missing, dir.path()).is_err());
    }

    #[tokio::test]
    async fn admin_and_deploy_tokens_authenticate_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteControlStore::open(&dir.path().join("c.sqlite")).unwrap());
        let shop = ProjectId::new("shop").unwrap();
        store.create_project(&shop).await.unwrap();
        let (token, record) = new_deploy_token(&shop, "ci");
        store.create_token(&record).await.unwrap();
        assert!(!token.contains(&record.secret_hash));

        let auth = Authenticator::new("sya_admin", store.clone());
        assert_eq!(
            auth.authenticate(&bearer("sya_admin")).await.unwrap(),
            Principal::Admin
        );
        assert_eq!(
            auth.authenticate(&bearer(&token)).await.unwrap(),
            Principal::Project(shop.clone())
        );
        for bad in [
            "sya_wrong",
            "",
            &format!("{token}x"),
            "syd_nope",
            "syd__x",
            &token.replace("syd_", "sya_"),
        ] {
            assert!(
                matches!(
                    auth.authenticate(&bearer(bad)).await,
                    Err(ApiError::Unauthorized)
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            auth.authenticate(&HeaderMap::new()).await,
            Err(ApiError::Unauthorized)
        ));

        store.revoke_token(&shop, &record.id).await.unwrap();
        assert!(auth.authenticate(&bearer(&token)).await.is_err());
    }

    #[test]
    fn scopes() {
        let shop = ProjectId::new("shop").unwrap();
        let other = ProjectId::new("other").unwrap();
        let scoped = Principal::Project(shop.clone());
        assert!(scoped.require_project(&shop).is_ok());
        assert_eq!(scoped.require_project(&other).unwrap_err().status(), 404);
        assert_eq!(scoped.require_admin().unwrap_err().status(), 403);
        assert!(Principal::Admin.require_project(&other).is_ok());
    }
}
