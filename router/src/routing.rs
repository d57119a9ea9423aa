//! Which project and build answer for a hostname.
//!
//! A [`Route`] is everything the request path needs, resolved once per
//! hostname and cached: the project (settings, env, suspension), its active
//! build with compiled header and cache rules, and the sandbox spec. Nothing
//! on the request path reads the control store while the route is cached.
//! Every change in the store drops all cached routes.

use crate::build::BuildRecord;
use crate::config::TenantDefaults;
use crate::error::ApiError;
use crate::metrics::RequestMeters;
use crate::store::{ApiKeyRecord, ControlStore, Project};
use globset::{Glob, GlobMatcher};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchyard_runtime::db::schema::Schema;
use switchyard_runtime::{AppSpec, EgressAllowlist, Limits, ProjectId};

/// How long a hostname that routes nowhere is remembered.
const MISS_TTL: Duration = Duration::from_secs(5);

/// What a hostname resolves to.
pub struct Route {
    /// The project.
    pub project: Project,
    /// Its active build, if it has one.
    pub build: Option<Arc<LiveBuild>>,
    /// Its request limits.
    pub rate: RateSpec,
    /// Its API keys, for the database gateway: loaded with the route, so
    /// a key check reads no store, and dropped with it on any change of
    /// the project (a revoked key stops working at once).
    pub keys: Vec<ApiKeyRecord>,
    /// Its request metrics.
    pub meters: RequestMeters,
}

/// A project's request limits, resolved against the server defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSpec {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Requests per UTC day; 0 for no quota.
    pub daily: u64,
}

/// A build ready to serve: the record plus its rules compiled.
pub struct LiveBuild {
    /// The committed build.
    pub record: BuildRecord,
    /// What the sandbox needs, if the build has a component.
    pub spec: Option<AppSpec>,
    /// The build's declared tables, for the HTTP gateway (and, through
    /// `spec`, for the guest).
    pub schema: Arc<Schema>,
    headers: Vec<(GlobMatcher, Vec<(HeaderName, HeaderValue)>)>,
    cache: Vec<(GlobMatcher, HeaderValue)>,
}

impl LiveBuild {
    /// Prepares `record` of `project` for serving.
    pub fn new(project: &Project, record: BuildRecord, limits: Limits) -> Result<Self, ApiError> {
        let corrupt = |what: String| ApiError::Internal(format!("build {} has {what}", record.id));
        let mut headers = Vec::new();
        for rule in &record.manifest.headers {
            let matcher =
                glob(&rule.pattern).map_err(|e| corrupt(format!("a bad pattern: {e}")))?;
            let mut set = Vec::new();
            for (name, value) in &rule.set {
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|e| corrupt(format!("a bad header: {e}")))?;
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|e| corrupt(format!("a bad header: {e}")))?;
                set.push((name, value));
            }
            headers.push((matcher, set));
        }
        let mut cache = Vec::new();
        for rule in &record.manifest.cache {
            let matcher =
                glob(&rule.pattern).map_err(|e| corrupt(format!("a bad pattern: {e}")))?;
            let value = HeaderValue::try_from(rule.cache_control.as_str())
                .map_err(|e| corrupt(format!("a bad cache rule: {e}")))?;
            cache.push((matcher, value));
        }
        let schema = Arc::new(
            Schema::new(record.manifest.tables.clone())
                .map_err(|e| corrupt(format!("invalid tables: {e}")))?,
        );
        let egress = Arc::new(
            EgressAllowlist::parse(&record.manifest.egress)
                .map_err(|e| corrupt(format!("an invalid egress rule: {e}")))?,
        );
        let spec = record.component.clone().map(|component| {
            // The manifest's variables, overridden by the project's.
            let mut env = record.manifest.env.clone();
            env.extend(
                project
                    .env
                    .iter()
                    .map(|v| (v.name.clone(), v.value.clone())),
            );
            AppSpec {
                project: project.id.clone(),
                build: record.id.clone(),
                component,
                env: env.into_iter().collect(),
                limits: limits.tightened_by(&record.manifest.limits).to_override(),
                schema: schema.clone(),
                egress,
            }
        });
        Ok(LiveBuild {
            record,
            spec,
            schema,
            headers,
            cache,
        })
    }

    /// Headers the manifest adds for `path`, in rule order.
    pub fn headers_for<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = &'a (HeaderName, HeaderValue)> + 'a {
        self.headers
            .iter()
            .filter(move |(matcher, _)| matcher.is_match(path))
            .flat_map(|(_, set)| set)
    }

    /// The `Cache-Control` of the first cache rule matching `path`.
    pub fn cache_control(&self, path: &str) -> Option<&HeaderValue> {
        self.cache
            .iter()
            .find(|(matcher, _)| matcher.is_match(path))
            .map(|(_, value)| value)
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(Glob::new(pattern)?.compile_matcher())
}

/// Resolves hostnames to routes, with caching.
pub struct RouteTable {
    store: Arc<dyn ControlStore>,
    base_domain: String,
    default_limits: Limits,
    max_body_bytes: u64,
    tenants: TenantDefaults,
    routes: moka::future::Cache<String, Arc<Route>>,
    misses: moka::future::Cache<String, ()>,
    /// Bumped by every invalidation; a route loaded across one is not cached.
    generation: AtomicU64,
}

impl RouteTable {
    /// A route table over `store`. `default_limits` are the sandbox limits
    /// projects start from; requests bodies are further capped at
    /// `max_body_bytes` (the listener's limit).
    pub fn new(
        store: Arc<dyn ControlStore>,
        base_domain: String,
        default_limits: Limits,
        max_body_bytes: u64,
        tenants: TenantDefaults,
    ) -> Self {
        RouteTable {
            store,
            base_domain,
            default_limits,
            max_body_bytes,
            tenants,
            routes: moka::future::Cache::builder()
                .max_capacity(100_000)
                .support_invalidation_closures()
                .build(),
            misses: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(MISS_TTL)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// Drops the cached routes of `project` (and every cached miss, which a
    /// new hostname of it may have been), leaving other tenants' routes.
    pub fn invalidate_project(&self, project: &ProjectId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let project = project.clone();
        // Only fails without invalidation closures, which `new` enables.
        let _ = self
            .routes
            .invalidate_entries_if(move |_, route| route.project.id == project);
        self.misses.invalidate_all();
    }

    /// Drops every cached route.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.routes.invalidate_all();
        self.misses.invalidate_all();
    }

    /// The project `<label>.<base_domain>` names, if `host` has that form.
    pub fn project_label<'h>(&self, host: &'h str) -> Option<&'h str> {
        crate::hostname::project_label(host, &self.base_domain)
    }

    /// The route for `host` (normalised), or `None` if it routes nowhere.
    pub async fn resolve(&self, host: &str) -> Result<Option<Arc<Route>>, ApiError> {
        if let Some(route) = self.routes.get(host).await {
            return Ok(Some(route));
        }
        if self.misses.contains_key(host) {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let route = self.load(host).await?;
        if self.generation.load(Ordering::SeqCst) == generation {
            match &route {
                Some(route) => self.routes.insert(host.to_owned(), route.clone()).await,
                None => self.misses.insert(host.to_owned(), ()).await,
            }
        }
        Ok(route)
    }

    async fn load(&self, host: &str) -> Result<Option<Arc<Route>>, ApiError> {
        let project_id = match self.project_label(host) {
            Some(label) => ProjectId::new(label).ok(),
            None => self.store.resolve_hostname(host).await?,
        };
        let Some(project_id) = project_id else {
            return Ok(None);
        };
        let Some(project) = self.store.project(&project_id).await? else {
            return Ok(None);
        };
        let limits = self.project_limits(&project);
        let build = match &project.active_build {
            Some(id) => {
                let record = self.store.build(&project.id, id).await?.ok_or_else(|| {
                    ApiError::Internal(format!("active build {id} of {} is missing", project.id))
                })?;
                Some(Arc::new(LiveBuild::new(&project, record, limits)?))
            }
            None => None,
        };
        let settings = &project.settings;
        let rate = RateSpec {
            per_minute: settings
                .requests_per_minute
                .unwrap_or(self.tenants.requests_per_minute),
            burst: settings.burst.unwrap_or(self.tenants.burst),
            daily: settings
                .daily_requests
                .unwrap_or(self.tenants.daily_requests),
        };
        let keys = self.store.api_keys(&project.id).await?;
        Ok(Some(Arc::new(Route {
            meters: RequestMeters::new(project.id.as_str()),
            project,
            build,
            rate,
            keys,
        })))
    }

    /// The sandbox limits of `project`: the defaults with its overrides,
    /// request bodies capped at the listener's limit.
    pub fn project_limits(&self, project: &Project) -> Limits {
        let mut limits = self
            .default_limits
            .with_overrides(&project.settings.sandbox);
        limits.request_body_bytes = limits.request_body_bytes.min(self.max_body_bytes);
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildManifest, CacheRule, HeaderRule, new_build_id};
    use crate::hostname::Hostname;
    use crate::store::{EnvVar, SqliteControlStore};

    fn table(store: Arc<dyn ControlStore>) -> RouteTable {
        RouteTable::new(
            store,
            "localhost".into(),
            Limits::default(),
            1_000_000,
            TenantDefaults::default(),
        )
    }

    #[tokio::test]
    async fn resolves_project_labels_and_custom_hostnames_and_forgets_on_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ControlStore> =
            Arc::new(SqliteControlStore::open(&dir.path().join("c.sqlite")).unwrap());
        let routes = table(store.clone());
        let shop = ProjectId::new("shop").unwrap();

        assert!(routes.resolve("shop.localhost").await.unwrap().is_none());
        store.create_project(&shop).await.unwrap();
        assert!(
            routes.resolve("shop.localhost").await.unwrap().is_none(),
            "the miss is cached"
        );
        routes.invalidate_all();
        let route = routes.resolve("shop.localhost").await.unwrap().unwrap();
        assert_eq!(route.project.id, shop);
        assert!(route.build.is_none());

        store
            .add_hostname(&shop, &Hostname::parse("*.shop.example").unwrap())
            .await
            .unwrap();
        // Per-project invalidation forgets that project's routes and every
        // miss (the new hostname was one), and keeps other projects' routes.
        let other = ProjectId::new("other").unwrap();
        store.create_project(&other).await.unwrap();
        let cached = routes.resolve("other.localhost").await.unwrap().unwrap();
        store.set_suspended(&other, true).await.unwrap();
        store.set_suspended(&shop, true).await.unwrap();
        routes.invalidate_project(&shop);
        assert!(
            routes
                .resolve("shop.localhost")
                .await
                .unwrap()
                .unwrap()
                .project
                .suspended
        );
        let kept = routes.resolve("other.localhost").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&kept, &cached) && !kept.project.suspended);
        assert!(routes.resolve("www.shop.example").await.unwrap().is_some());
        assert!(
            routes.resolve("a.b.localhost").await.unwrap().is_none(),
            "one label only"
        );
        assert!(routes.resolve("localhost").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn live_builds_compile_rules_and_merge_env_and_limits() {
        let project = Project {
            id: ProjectId::new("p").unwrap(),
            created_at: 0,
            suspended: false,
            active_build: None,
            env: vec![EnvVar {
                name: "SHARED".into(),
                value: "project".into(),
                secret: true,
            }],
            settings: Default::default(),
        };
        let mut manifest = BuildManifest::default();
        manifest.env.insert("SHARED".into(), "manifest".into());
        manifest.env.insert("ONLY_MANIFEST".into(), "m".into());
        manifest.limits.wall_clock_ms = Some(100);
        manifest.headers.push(HeaderRule {
            pattern: "/**".into(),
            set: [("x-frame-options".to_string(), "DENY".to_string())].into(),
        });
        manifest.cache.push(CacheRule {
            pattern: "/assets/**".into(),
            cache_control: "immutable".into(),
        });
        let record = BuildRecord {
            id: new_build_id(),
            project: project.id.clone(),
            created_at: 0,
            component: Some(switchyard_runtime::ComponentId::of(b"x")),
            manifest,
        };
        let live = LiveBuild::new(&project, record, Limits::default()).unwrap();
        let spec = live.spec.as_ref().unwrap();
        assert!(spec.env.contains(&("SHARED".into(), "project".into())));
        assert!(spec.env.contains(&("ONLY_MANIFEST".into(), "m".into())));
        assert_eq!(spec.limits.wall_clock_ms, Some(100));
        assert_eq!(live.headers_for("/a/b").count(), 1);
        assert_eq!(live.cache_control("/assets/x.js").unwrap(), "immutable");
        assert!(live.cache_control("/index.html").is_none());
    }
}
