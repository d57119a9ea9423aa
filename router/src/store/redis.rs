//! The shared control store: Redis, for many nodes.
//!
//! Every key starts with `{<prefix>}:` — one hash tag, so the whole control
//! plane lives in one slot and each multi-key change is one Lua script,
//! atomic on a single server or a cluster shard. Layout (`C` = the prefix):
//!
//! - `C projects`: sorted set of project ids (score 0, for paging by id);
//! - `C p:<id>`: hash `created_at`, `suspended`, `active_build`, `settings`;
//! - `C p:<id>:env`: hash name → `{"value", "secret"}`;
//! - `C p:<id>:hosts`: hash hostname → created_at; `C host:<name>` → id;
//! - `C p:<id>:builds`: sorted set build id by sequence number, `C
//!   p:<id>:seq` the last one, `C p:<id>:build:<build>` the record (JSON);
//! - `C p:<id>:lease`: the deploy lease's holder, expiring by Redis's clock
//!   (so nodes' clocks never matter); `C leases`: projects that had one;
//! - `C token:<id>`, `C key:<id>`: hashes, with `C p:<id>:tokens` and `C
//!   p:<id>:keys` as per-project sets; `C certs`: hash hostname → JSON.
//!
//! Every change publishes `p:<id>` or `certs` on `C changes` in the same
//! script, and every node's subscription turns those into [`Change`]s. A node
//! whose subscription was broken may have missed some, so each
//! (re)subscription is announced as [`Change::All`]; while Redis is away,
//! nothing is announced and cached routes keep serving.

use super::{
    ApiKeyRecord, CertificateRecord, Change, ControlStore, EnvVar, HostnameRecord, KeyKind, Page,
    Project, ProjectSettings, StoreError, TokenRecord, now_ms,
};
use crate::build::BuildRecord;
use crate::hostname::{Hostname, wildcard_for};
use redis::{PushKind, Script, Value};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;
use switchyard_runtime::backend::redis::{RedisConn, RedisFailure};
use switchyard_runtime::{BuildId, ProjectId};
use tokio::sync::{broadcast, mpsc};

impl From<RedisFailure> for StoreError {
    fn from(e: RedisFailure) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("corrupt record: {what}"))
}

/// Status replies of the scripts.
const OK: i64 = 1;
const NOT_FOUND: i64 = 0;
const CONFLICT: i64 = -1;
const WRITERS: i64 = -2;

/// Creates a project. KEYS: project, projects, channel. ARGV: id, now.
static CREATE_PROJECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'suspended', '0', 'settings', '{}')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Sets one field of an existing project. KEYS: project, channel. ARGV:
/// id, field, value.
static SET_FIELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('PUBLISH', KEYS[2], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Sets env vars. KEYS: project, env, channel. ARGV: id, then name/JSON
/// pairs.
static SET_ENV: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Removes an env var. KEYS: project, env, channel. ARGV: id, name.
/// Returns 0 no project, 1 removed, 2 was not set.
static UNSET_ENV: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local removed = redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
if removed == 1 then return 1 end
return 2
",
    )
});

/// Deletes a project and everything it owns. KEYS: project, projects,
/// leases, channel. ARGV: id, key prefix (`{…}:`), project key prefix
/// (`{…}:p:<id>`).
static DELETE_PROJECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id, c, p = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for _, h in ipairs(redis.call('HKEYS', p .. ':hosts')) do
  if redis.call('GET', c .. 'host:' .. h) == id then redis.call('DEL', c .. 'host:' .. h) end
end
for _, b in ipairs(redis.call('ZRANGE', p .. ':builds', 0, -1)) do
  redis.call('DEL', p .. ':build:' .. b)
end
for _, t in ipairs(redis.call('SMEMBERS', p .. ':tokens')) do redis.call('DEL', c .. 'token:' .. t) end
for _, k in ipairs(redis.call('SMEMBERS', p .. ':keys')) do redis.call('DEL', c .. 'key:' .. k) end
redis.call('DEL', KEYS[1], p .. ':env', p .. ':hosts', p .. ':builds', p .. ':seq',
  p .. ':lease', p .. ':tokens', p .. ':keys')
redis.call('ZREM', KEYS[2], id)
redis.call('SREM', KEYS[3], id)
redis.call('PUBLISH', KEYS[4], 'p:' .. id)
return 1
",
    )
});

/// Routes a hostname. KEYS: project, host, project's hosts, channel. ARGV:
/// id, hostname, now. Returns 0 no project, -1 taken, 1 added.
static ADD_HOSTNAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX') then return -1 end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('PUBLISH', KEYS[4], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Unroutes a hostname of a project. KEYS: host, project's hosts, channel.
/// ARGV: id, hostname.
static REMOVE_HOSTNAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
  removed = 1
end
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return removed
",
    )
});

/// Takes a deploy lease. KEYS: project, lease, leases. ARGV: id, holder,
/// ttl ms. Returns 0 no project, -1 held by another, 1 taken.
static BEGIN_DEPLOY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
",
    )
});

/// Releases a lease (a deploy's, or the collection's) if `holder` has it.
/// KEYS: lease. ARGV: holder.
static END_DEPLOY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// Releases every lease whose holder starts with a prefix: deploy leases,
/// object writers, the collection. KEYS: leases, writers, collecting. ARGV:
/// holder prefix, key prefix (`{…}:`).
static RELEASE_DEPLOYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix, c = ARGV[1], ARGV[2]
local function ours(holder)
  return string.sub(holder, 1, #prefix) == prefix
end
for _, holder in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if ours(holder) then
    redis.call('DEL', c .. 'writer:' .. holder)
    redis.call('SREM', KEYS[2], holder)
  end
end
local collector = redis.call('GET', KEYS[3])
if collector and ours(collector) then redis.call('DEL', KEYS[3]) end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = c .. 'p:' .. id .. ':lease'
  local holder = redis.call('GET', lease)
  if not holder then
    redis.call('SREM', KEYS[1], id)
  elseif ours(holder) then
    redis.call('DEL', lease)
    redis.call('SREM', KEYS[1], id)
  end
end
return 1
",
    )
});

/// Registers an object writer unless a collection holds the objects. KEYS:
/// collecting, writers, writer. ARGV: holder, ttl ms. Returns -1 collecting.
static BEGIN_OBJECT_WRITES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
",
    )
});

/// Ends an object writer. KEYS: writers, writer. ARGV: holder.
static END_OBJECT_WRITES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Takes the objects for a collection if no writer is registered. KEYS:
/// collecting, writers. ARGV: holder, ttl ms, key prefix. Returns -1 another
/// collection, -2 writers.
static BEGIN_COLLECTION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return -1 end
for _, holder in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[3] .. 'writer:' .. holder) == 1 then return -2 end
  redis.call('SREM', KEYS[2], holder)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Records a build and activates it, if the lease is still held. KEYS:
/// project, lease, seq, builds, build, channel. ARGV: id, holder, build id,
/// record. Returns 0 no project, -1 lease lost, 1 committed.
static COMMIT_BUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local seq = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[5], ARGV[4])
redis.call('ZADD', KEYS[4], seq, ARGV[3])
redis.call('HSET', KEYS[1], 'active_build', ARGV[3])
redis.call('PUBLISH', KEYS[6], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Points a project at one of its builds. KEYS: project, build, channel.
/// ARGV: id, build id.
static ACTIVATE_BUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'active_build', ARGV[2])
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Deletes all but the newest builds, never the active one. KEYS: project,
/// builds, channel. ARGV: id, keep, project key prefix. Returns the deleted
/// records.
static PRUNE_BUILDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local active = redis.call('HGET', KEYS[1], 'active_build')
local doomed = {}
for _, b in ipairs(redis.call('ZREVRANGE', KEYS[2], tonumber(ARGV[2]), -1)) do
  if b ~= active then
    local key = ARGV[3] .. ':build:' .. b
    local record = redis.call('GET', key)
    if record then doomed[#doomed + 1] = record end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], b)
  end
end
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return doomed
",
    )
});

/// Stores a token or key record of a project. KEYS: project, record,
/// project's set, channel. ARGV: id, record id, then field/value pairs.
/// Returns 0 no project, -1 the id exists, 1 stored.
static CREATE_CREDENTIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PUBLISH', KEYS[4], 'p:' .. ARGV[1])
return 1
",
    )
});

/// Deletes a token or key if it belongs to the project. KEYS: record,
/// project's set, channel. ARGV: id, record id.
static REVOKE_CREDENTIAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local revoked = 0
if redis.call('HGET', KEYS[1], 'project') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  revoked = 1
end
redis.call('PUBLISH', KEYS[3], 'p:' .. ARGV[1])
return revoked
",
    )
});

/// Stores or deletes a certificate. KEYS: certs, channel. ARGV: hostname,
/// JSON (empty to delete). Returns whether one was there.
static PUT_CERTIFICATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', KEYS[2], 'certs')
return existed
",
    )
});

#[derive(Serialize, Deserialize)]
struct StoredEnv {
    value: String,
    secret: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredCertificate {
    cert_pem: String,
    key_pem: String,
    created_at: i64,
}

/// The control store in Redis. See the module docs.
pub struct RedisControlStore {
    redis: RedisConn,
    /// `{<prefix>}:`.
    base: String,
    changes: broadcast::Sender<Change>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for RedisControlStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisControlStore {
    /// Connects to `url`, checks that Redis answers, and subscribes to the
    /// change channel. Keys start with `{<prefix>}:`, so several
    /// deployments can share one Redis under different prefixes.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let redis = RedisConn::open(url, timeout, Some(push_tx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let base = format!("{{{prefix}}}:");
        let channel = format!("{base}changes");
        redis.query::<String>(&redis::cmd("PING")).await?;
        let (changes, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(
            redis.clone(),
            channel.clone(),
            push_rx,
            changes.clone(),
        ));
        redis.subscribe(&channel).await?;
        Ok(RedisControlStore {
            redis,
            base,
            changes,
            listener,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    fn project_key(&self, id: &str) -> String {
        format!("{}p:{id}", self.base)
    }

    fn channel(&self) -> String {
        self.key("changes")
    }

    async fn run(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<i64, StoreError> {
        Ok(self.redis.script(invocation).await?)
    }

    /// Runs a script whose status says whether the project exists.
    async fn on_project(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<i64, StoreError> {
        match self.run(invocation).await? {
            NOT_FOUND => Err(StoreError::NotFound),
            status => Ok(status),
        }
    }

    async fn read_projects(&self, ids: &[String]) -> Result<Vec<Project>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            let key = self.project_key(id);
            pipe.hgetall(&key).hgetall(format!("{key}:env"));
        }
        let replies: Vec<HashMap<String, String>> = self.redis.pipeline(&pipe).await?;
        let mut projects = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(replies.chunks(2)) {
            if let [fields, env] = pair
                && !fields.is_empty()
            {
                projects.push(project_from(id, fields, env)?);
            }
        }
        Ok(projects)
    }

    async fn build_records(&self, keys: Vec<String>) -> Result<Vec<BuildRecord>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<String>> = self.redis.query(redis::cmd("MGET").arg(keys)).await?;
        records
            .into_iter()
            .flatten()
            .map(|json| serde_json::from_str(&json).map_err(corrupt))
            .collect()
    }

    async fn credential(&self, key: String) -> Result<Option<HashMap<String, String>>, StoreError> {
        let fields: HashMap<String, String> =
            self.redis.query(redis::cmd("HGETALL").arg(key)).await?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    async fn credentials(
        &self,
        project: &ProjectId,
        set: &str,
        kind: &str,
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .query(
                redis::cmd("SMEMBERS").arg(format!("{}:{set}", self.project_key(project.as_str()))),
            )
            .await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.key(&format!("{kind}:{id}")));
        }
        let mut records: Vec<HashMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            self.redis.pipeline(&pipe).await?
        };
        records.retain(|r| !r.is_empty());
        records.sort_by(|a, b| {
            let order = |r: &HashMap<String, String>| {
                (
                    r.get("created_at").and_then(|c| c.parse::<i64>().ok()),
                    r.get("id").cloned(),
                )
            };
            order(a).cmp(&order(b))
        });
        Ok(records)
    }

    async fn create_credential(
        &self,
        project: &ProjectId,
        id: &str,
        kind: &str,
        set: &str,
        fields: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let pkey = self.project_key(project.as_str());
        let mut invocation = CREATE_CREDENTIAL.prepare_invoke();
        invocation
            .key(&pkey)
            .key(self.key(&format!("{kind}:{id}")))
            .key(format!("{pkey}:{set}"))
            .key(self.channel())
            .arg(project.as_str())
            .arg(id)
            .arg("id")
            .arg(id)
            .arg("project")
            .arg(project.as_str());
        for (field, value) in fields {
            invocation.arg(*field).arg(value);
        }
        match self.on_project(&invocation).await? {
            CONFLICT => Err(StoreError::Unavailable(format!("{kind} id `{id}` exists"))),
            _ => Ok(()),
        }
    }

    async fn revoke_credential(
        &self,
        project: &ProjectId,
        id: &str,
        kind: &str,
        set: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = REVOKE_CREDENTIAL.prepare_invoke();
        invocation
            .key(self.key(&format!("{kind}:{id}")))
            .key(format!("{}:{set}", self.project_key(project.as_str())))
            .key(self.channel())
            .arg(project.as_str())
            .arg(id);
        Ok(self.run(&invocation).await? == OK)
    }
}

/// Forwards the change channel's messages to subscribers of the store. When
/// the connection drops, keeps it being re-made (a ping every 500 ms), since
/// nothing else may be using it to trigger the reconnect; the resubscription
/// that follows is announced as `Change::All`.
async fn listen(
    redis: RedisConn,
    channel: String,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    changes: broadcast::Sender<Change>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message => {
                let change = match push.data.as_slice() {
                    [_, Value::BulkString(payload)] => parse_change(payload),
                    _ => None,
                };
                // Unparseable: someone else wrote to our channel; be safe.
                let _ = changes.send(change.unwrap_or(Change::All));
            }
            PushKind::Subscribe => {
                let _ = changes.send(Change::All);
            }
            PushKind::Disconnection => {
                // Cached routes keep serving meanwhile; they are dropped
                // once the subscription is back (`Subscribe` above).
                tracing::warn!("lost the connection to the control store's redis; reconnecting");
                while redis.query::<String>(&redis::cmd("PING")).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tracing::info!("reconnected to the control store's redis");
                // Resubscribe explicitly too: automatic resubscription only
                // covers reconnects the manager itself noticed.
                if let Err(e) = redis.subscribe(&channel).await {
                    tracing::warn!(error = %e, "resubscribing to control store changes failed");
                }
            }
            _ => {}
        }
    }
}

fn parse_change(payload: &[u8]) -> Option<Change> {
    let text = std::str::from_utf8(payload).ok()?;
    if text == "certs" {
        return Some(Change::Certificates);
    }
    let id = text.strip_prefix("p:")?;
    ProjectId::new(id).ok().map(Change::Project)
}

fn project_from(
    id: &str,
    fields: &HashMap<String, String>,
    env: &HashMap<String, String>,
) -> Result<Project, StoreError> {
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| corrupt(format!("project {id} has no {name}")))
    };
    let mut env: Vec<EnvVar> = env
        .iter()
        .map(|(name, json)| {
            let stored: StoredEnv = serde_json::from_str(json).map_err(corrupt)?;
            Ok(EnvVar {
                name: name.clone(),
                value: stored.value,
                secret: stored.secret,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    env.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Project {
        id: ProjectId::new(id).map_err(corrupt)?,
        created_at: field("created_at")?.parse().map_err(corrupt)?,
        suspended: field("suspended")? == "1",
        active_build: fields
            .get("active_build")
            .map(|b| BuildId::new(b).map_err(corrupt))
            .transpose()?,
        env,
        settings: serde_json::from_str(field("settings")?).map_err(corrupt)?,
    })
}

fn token_from(fields: &HashMap<String, String>) -> Result<TokenRecord, StoreError> {
    let get = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| corrupt(format!("token without {name}")))
    };
    Ok(TokenRecord {
        id: get("id")?,
        project: ProjectId::new(&get("project")?).map_err(corrupt)?,
        name: get("name")?,
        secret_hash: get("secret_hash")?,
        created_at: get("created_at")?.parse().map_err(corrupt)?,
    })
}

fn api_key_from(fields: &HashMap<String, String>) -> Result<ApiKeyRecord, StoreError> {
    let get = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| corrupt(format!("api key without {name}")))
    };
    let kind = match get("kind")?.as_str() {
        "public" => KeyKind::Public,
        "server" => KeyKind::Server,
        other => return Err(corrupt(format!("key kind `{other}`"))),
    };
    Ok(ApiKeyRecord {
        id: get("id")?,
        project: ProjectId::new(&get("project")?).map_err(corrupt)?,
        kind,
        name: get("name")?,
        secret_hash: get("secret_hash")?,
        created_at: get("created_at")?.parse().map_err(corrupt)?,
    })
}

#[async_trait::async_trait]
impl ControlStore for RedisControlStore {
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_project(&self, id: &ProjectId) -> Result<Project, StoreError> {
        let mut invocation = CREATE_PROJECT.prepare_invoke();
        invocation
            .key(self.project_key(id.as_str()))
            .key(self.key("projects"))
            .key(self.channel())
            .arg(id.as_str())
            .arg(now_ms());
        if self.run(&invocation).await? == CONFLICT {
            return Err(StoreError::Conflict {
                code: "PROJECT_EXISTS",
                message: format!("project `{id}` already exists"),
            });
        }
        self.project(id).await?.ok_or(StoreError::NotFound)
    }

    async fn project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError> {
        Ok(self.read_projects(&[id.as_str().to_owned()]).await?.pop())
    }

    async fn projects(&self, after: Option<&str>, limit: u32) -> Result<Page<Project>, StoreError> {
        let lower = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let ids: Vec<String> = self
            .redis
            .query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(self.key("projects"))
                    .arg(lower)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(i64::from(limit) + 1),
            )
            .await?;
        let more = ids.len() > limit as usize;
        let items = self
            .read_projects(&ids[..ids.len().min(limit as usize)])
            .await?;
        let next = more
            .then(|| items.last().map(|p| p.id.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<bool, StoreError> {
        let pkey = self.project_key(id.as_str());
        let mut invocation = DELETE_PROJECT.prepare_invoke();
        invocation
            .key(&pkey)
            .key(self.key("projects"))
            .key(self.key("leases"))
            .key(self.channel())
            .arg(id.as_str())
            .arg(&self.base)
            .arg(&pkey);
        Ok(self.run(&invocation).await? == OK)
    }

    async fn set_suspended(&self, id: &ProjectId, suspended: bool) -> Result<(), StoreError> {
        let mut invocation = SET_FIELD.prepare_invoke();
        invocation
            .key(self.project_key(id.as_str()))
            .key(self.channel())
            .arg(id.as_str())
            .arg("suspended")
            .arg(if suspended { "1" } else { "0" });
        self.on_project(&invocation).await.map(drop)
    }

    async fn set_env(&self, id: &ProjectId, vars: &[EnvVar]) -> Result<(), StoreError> {
        let pkey = self.project_key(id.as_str());
        let mut invocation = SET_ENV.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:env"))
            .key(self.channel())
            .arg(id.as_str());
        for var in vars {
            let json = serde_json::to_string(&StoredEnv {
                value: var.value.clone(),
                secret: var.secret,
            })
            .map_err(corrupt)?;
            invocation.arg(&var.name).arg(json);
        }
        self.on_project(&invocation).await.map(drop)
    }

    async fn unset_env(&self, id: &ProjectId, name: &str) -> Result<bool, StoreError> {
        let pkey = self.project_key(id.as_str());
        let mut invocation = UNSET_ENV.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:env"))
            .key(self.channel())
            .arg(id.as_str())
            .arg(name);
        Ok(self.on_project(&invocation).await? == OK)
    }

    async fn set_settings(
        &self,
        id: &ProjectId,
        settings: &ProjectSettings,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(settings).map_err(corrupt)?;
        let mut invocation = SET_FIELD.prepare_invoke();
        invocation
            .key(self.project_key(id.as_str()))
            .key(self.channel())
            .arg(id.as_str())
            .arg("settings")
            .arg(json);
        self.on_project(&invocation).await.map(drop)
    }

    async fn add_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<HostnameRecord, StoreError> {
        let pkey = self.project_key(project.as_str());
        let created_at = now_ms();
        let mut invocation = ADD_HOSTNAME.prepare_invoke();
        invocation
            .key(&pkey)
            .key(self.key(&format!("host:{}", hostname.as_str())))
            .key(format!("{pkey}:hosts"))
            .key(self.channel())
            .arg(project.as_str())
            .arg(hostname.as_str())
            .arg(created_at);
        if self.on_project(&invocation).await? == CONFLICT {
            // Never say which project has it.
            return Err(StoreError::Conflict {
                code: "HOSTNAME_TAKEN",
                message: format!("`{}` is already routed", hostname.as_str()),
            });
        }
        Ok(HostnameRecord {
            hostname: hostname.clone(),
            project: project.clone(),
            created_at,
        })
    }

    async fn remove_hostname(
        &self,
        project: &ProjectId,
        hostname: &Hostname,
    ) -> Result<bool, StoreError> {
        let mut invocation = REMOVE_HOSTNAME.prepare_invoke();
        invocation
            .key(self.key(&format!("host:{}", hostname.as_str())))
            .key(format!("{}:hosts", self.project_key(project.as_str())))
            .key(self.channel())
            .arg(project.as_str())
            .arg(hostname.as_str());
        Ok(self.run(&invocation).await? == OK)
    }

    async fn hostnames(&self, project: &ProjectId) -> Result<Vec<HostnameRecord>, StoreError> {
        let hosts: HashMap<String, i64> = self
            .redis
            .query(
                redis::cmd("HGETALL").arg(format!("{}:hosts", self.project_key(project.as_str()))),
            )
            .await?;
        let mut records = hosts
            .into_iter()
            .map(|(name, created_at)| {
                Ok(HostnameRecord {
                    hostname: Hostname::parse(&name).map_err(corrupt)?,
                    project: project.clone(),
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        records.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(records)
    }

    async fn resolve_hostname(&self, host: &str) -> Result<Option<ProjectId>, StoreError> {
        let mut names = vec![self.key(&format!("host:{host}"))];
        names.extend(wildcard_for(host).map(|w| self.key(&format!("host:{w}"))));
        let found: Vec<Option<String>> = self.redis.query(redis::cmd("MGET").arg(names)).await?;
        found
            .into_iter()
            .flatten()
            .next()
            .map(|id| ProjectId::new(&id).map_err(corrupt))
            .transpose()
    }

    async fn begin_deploy(
        &self,
        project: &ProjectId,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let pkey = self.project_key(project.as_str());
        let mut invocation = BEGIN_DEPLOY.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:lease"))
            .key(self.key("leases"))
            .arg(project.as_str())
            .arg(holder)
            .arg(ttl_ms);
        match self.on_project(&invocation).await? {
            CONFLICT => Err(StoreError::Conflict {
                code: "DEPLOY_IN_PROGRESS",
                message: format!("another deploy of `{project}` is in progress"),
            }),
            _ => Ok(()),
        }
    }

    async fn end_deploy(&self, project: &ProjectId, holder: &str) -> Result<(), StoreError> {
        let mut invocation = END_DEPLOY.prepare_invoke();
        invocation
            .key(format!("{}:lease", self.project_key(project.as_str())))
            .arg(holder);
        self.run(&invocation).await.map(drop)
    }

    async fn release_deploys(&self, holder_prefix: &str) -> Result<(), StoreError> {
        let mut invocation = RELEASE_DEPLOYS.prepare_invoke();
        invocation
            .key(self.key("leases"))
            .key(self.key("writers"))
            .key(self.key("collecting"))
            .arg(holder_prefix)
            .arg(&self.base);
        self.run(&invocation).await.map(drop)
    }

    async fn commit_build(&self, build: &BuildRecord, holder: &str) -> Result<(), StoreError> {
        let pkey = self.project_key(build.project.as_str());
        let record = serde_json::to_string(build).map_err(corrupt)?;
        let mut invocation = COMMIT_BUILD.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:lease"))
            .key(format!("{pkey}:seq"))
            .key(format!("{pkey}:builds"))
            .key(format!("{pkey}:build:{}", build.id))
            .key(self.channel())
            .arg(build.project.as_str())
            .arg(holder)
            .arg(build.id.as_str())
            .arg(record);
        match self.on_project(&invocation).await? {
            CONFLICT => Err(StoreError::Conflict {
                code: "DEPLOY_LEASE_LOST",
                message: "this deploy took too long and another deploy of the project \
                          took over; it was not activated"
                    .into(),
            }),
            _ => Ok(()),
        }
    }

    async fn build(
        &self,
        project: &ProjectId,
        id: &BuildId,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let key = format!("{}:build:{id}", self.project_key(project.as_str()));
        Ok(self.build_records(vec![key]).await?.pop())
    }

    async fn builds(
        &self,
        project: &ProjectId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<BuildRecord>, StoreError> {
        let upper = match after {
            None => "+inf".to_owned(),
            Some(cursor) => format!(
                "({}",
                cursor.parse::<u64>().map_err(|_| StoreError::NotFound)?
            ),
        };
        let pkey = self.project_key(project.as_str());
        // Scores are sequence numbers, exact in a double.
        let listed: Vec<(String, f64)> = self
            .redis
            .query(
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(format!("{pkey}:builds"))
                    .arg(upper)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(i64::from(limit) + 1),
            )
            .await?;
        let more = listed.len() > limit as usize;
        let page = &listed[..listed.len().min(limit as usize)];
        let keys = page
            .iter()
            .map(|(id, _)| format!("{pkey}:build:{id}"))
            .collect();
        let items = self.build_records(keys).await?;
        let next = if more {
            page.last().map(|(_, seq)| format!("{seq:.0}"))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn activate_build(&self, project: &ProjectId, id: &BuildId) -> Result<(), StoreError> {
        let pkey = self.project_key(project.as_str());
        let mut invocation = ACTIVATE_BUILD.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:build:{id}"))
            .key(self.channel())
            .arg(project.as_str())
            .arg(id.as_str());
        self.on_project(&invocation).await.map(drop)
    }

    async fn prune_builds(
        &self,
        project: &ProjectId,
        keep: usize,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let pkey = self.project_key(project.as_str());
        let mut invocation = PRUNE_BUILDS.prepare_invoke();
        invocation
            .key(&pkey)
            .key(format!("{pkey}:builds"))
            .key(self.channel())
            .arg(project.as_str())
            .arg(keep)
            .arg(&pkey);
        let records: Vec<String> = self.redis.script(&invocation).await?;
        records
            .iter()
            .map(|json| serde_json::from_str(json).map_err(corrupt))
            .collect()
    }

    async fn begin_object_writes(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError> {
        let mut invocation = BEGIN_OBJECT_WRITES.prepare_invoke();
        invocation
            .key(self.key("collecting"))
            .key(self.key("writers"))
            .key(self.key(&format!("writer:{holder}")))
            .arg(holder)
            .arg(ttl_ms.max(1));
        match self.run(&invocation).await? {
            CONFLICT => Err(super::collection_in_progress()),
            _ => Ok(()),
        }
    }

    async fn end_object_writes(&self, holder: &str) -> Result<(), StoreError> {
        let mut invocation = END_OBJECT_WRITES.prepare_invoke();
        invocation
            .key(self.key("writers"))
            .key(self.key(&format!("writer:{holder}")))
            .arg(holder);
        self.run(&invocation).await.map(drop)
    }

    async fn begin_collection(&self, holder: &str, ttl_ms: i64) -> Result<(), StoreError> {
        let mut invocation = BEGIN_COLLECTION.prepare_invoke();
        invocation
            .key(self.key("collecting"))
            .key(self.key("writers"))
            .arg(holder)
            .arg(ttl_ms.max(1))
            .arg(&self.base);
        match self.run(&invocation).await? {
            CONFLICT => Err(super::collection_in_progress()),
            WRITERS => Err(super::object_writes_in_progress()),
            _ => Ok(()),
        }
    }

    async fn end_collection(&self, holder: &str) -> Result<(), StoreError> {
        let mut invocation = END_DEPLOY.prepare_invoke();
        invocation.key(self.key("collecting")).arg(holder);
        self.run(&invocation).await.map(drop)
    }

    async fn referenced_objects(&self) -> Result<HashSet<String>, StoreError> {
        let mut referenced = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let lower = after
                .as_deref()
                .map_or_else(|| "-".to_owned(), |a| format!("({a}"));
            let ids: Vec<String> = self
                .redis
                .query(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.key("projects"))
                        .arg(lower)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(100),
                )
                .await?;
            let Some(last) = ids.last().cloned() else {
                return Ok(referenced);
            };
            for id in &ids {
                let pkey = self.project_key(id);
                let builds: Vec<String> = self
                    .redis
                    .query(
                        redis::cmd("ZRANGE")
                            .arg(format!("{pkey}:builds"))
                            .arg(0)
                            .arg(-1),
                    )
                    .await?;
                let keys = builds.iter().map(|b| format!("{pkey}:build:{b}")).collect();
                for build in self.build_records(keys).await? {
                    referenced.extend(build.component.map(|c| c.to_string()));
                    referenced.extend(build.manifest.blob_hashes().map(str::to_owned));
                }
            }
            after = Some(last);
        }
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.create_credential(
            &token.project,
            &token.id,
            "token",
            "tokens",
            &[
                ("name", token.name.clone()),
                ("secret_hash", token.secret_hash.clone()),
                ("created_at", token.created_at.to_string()),
            ],
        )
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.credential(self.key(&format!("token:{id}")))
            .await?
            .map(|fields| token_from(&fields))
            .transpose()
    }

    async fn tokens(&self, project: &ProjectId) -> Result<Vec<TokenRecord>, StoreError> {
        self.credentials(project, "tokens", "token")
            .await?
            .iter()
            .map(token_from)
            .collect()
    }

    async fn revoke_token(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError> {
        self.revoke_credential(project, id, "token", "tokens").await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        self.create_credential(
            &key.project,
            &key.id,
            "key",
            "keys",
            &[
                ("kind", key.kind.as_str().to_owned()),
                ("name", key.name.clone()),
                ("secret_hash", key.secret_hash.clone()),
                ("created_at", key.created_at.to_string()),
            ],
        )
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.credential(self.key(&format!("key:{id}")))
            .await?
            .map(|fields| api_key_from(&fields))
            .transpose()
    }

    async fn api_keys(&self, project: &ProjectId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.credentials(project, "keys", "key")
            .await?
            .iter()
            .map(api_key_from)
            .collect()
    }

    async fn revoke_api_key(&self, project: &ProjectId, id: &str) -> Result<bool, StoreError> {
        self.revoke_credential(project, id, "key", "keys").await
    }

    async fn put_certificate(&self, cert: &CertificateRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(&StoredCertificate {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
            created_at: cert.created_at,
        })
        .map_err(corrupt)?;
        let mut invocation = PUT_CERTIFICATE.prepare_invoke();
        invocation
            .key(self.key("certs"))
            .key(self.channel())
            .arg(cert.hostname.as_str())
            .arg(json);
        self.run(&invocation).await.map(drop)
    }

    async fn certificates(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        let all: HashMap<String, String> = self
            .redis
            .query(redis::cmd("HGETALL").arg(self.key("certs")))
            .await?;
        let mut certs = all
            .into_iter()
            .map(|(name, json)| {
                let stored: StoredCertificate = serde_json::from_str(&json).map_err(corrupt)?;
                Ok(CertificateRecord {
                    hostname: Hostname::parse(&name).map_err(corrupt)?,
                    cert_pem: stored.cert_pem,
                    key_pem: stored.key_pem,
                    created_at: stored.created_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        certs.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(certs)
    }

    async fn delete_certificate(&self, hostname: &Hostname) -> Result<bool, StoreError> {
        let mut invocation = PUT_CERTIFICATE.prepare_invoke();
        invocation
            .key(self.key("certs"))
            .key(self.channel())
            .arg(hostname.as_str())
            .arg("");
        Ok(self.run(&invocation).await? == OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(prefix: &str) -> RedisControlStore {
        let redis = switchyard_test_services::shared_redis();
        RedisControlStore::connect(&redis.url(), prefix, Duration::from_secs(5))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn passes_the_control_store_contract() {
        let store = store("contract").await;
        crate::store::contract::control_store_contract(&store).await;
    }

    #[tokio::test]
    async fn another_node_hears_every_change() {
        let a = store("two-nodes").await;
        let b = store("two-nodes").await;
        let mut heard = b.subscribe();
        let id = ProjectId::new("heard-by-b").unwrap();
        let _ = a.delete_project(&id).await;
        a.create_project(&id).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let change = tokio::time::timeout_at(deadline, heard.recv())
                .await
                .expect("b heard a's change within 1 s")
                .unwrap();
            if change == Change::Project(id.clone()) {
                break;
            }
        }
        assert!(b.project(&id).await.unwrap().is_some());
        a.delete_project(&id).await.unwrap();
    }
}
