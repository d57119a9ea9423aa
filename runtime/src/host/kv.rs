//! `switchyard:gateway/kv` for guests: validation, per-request call limits
//! and timeouts in front of the project's [`KvBackend`].
//!
//! The namespace is the tenant's project id from the request's host state;
//! nothing the guest passes can change it.

use super::kv_bindings::{self as wit, Error, KeyPage};
use crate::backend::kv::KvBackendError;
use crate::state::{RequestState, TenantCtx};
use std::future::Future;
use std::time::Duration;
use wasmtime::component::{HasData, Linker};

/// Most keys one `list-keys` page returns, whatever the guest asks for.
const MAX_LIST_LIMIT: u32 = 1000;

/// What the kv host functions may touch: the tenant (read-only) and this
/// request's call counter.
pub(crate) struct KvView<'a> {
    pub(crate) tenant: &'a TenantCtx,
    pub(crate) calls: &'a mut u32,
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

pub(crate) fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<RequestState, HasKv>(linker, RequestState::kv)
}

impl KvView<'_> {
    /// Counts one call against the request's kv call limit.
    fn begin(&mut self) -> Result<(), Error> {
        if *self.calls >= self.tenant.limits.kv_calls {
            return Err(Error::LimitExceeded);
        }
        *self.calls += 1;
        Ok(())
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        let max = self.tenant.limits.kv_key_bytes as usize;
        if key.is_empty() {
            Err(Error::InvalidKey("the key is empty".into()))
        } else if key.len() > max {
            Err(Error::InvalidKey(format!(
                "the key is {} bytes; the limit is {max}",
                key.len()
            )))
        } else {
            Ok(())
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() as u64 > self.tenant.limits.kv_value_bytes {
            Err(Error::ValueTooLarge)
        } else {
            Ok(())
        }
    }

    /// Begins a call on `key` (and optionally a value): counted, then
    /// validated.
    fn begin_with(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), Error> {
        self.begin()?;
        self.check_key(key)?;
        value.map_or(Ok(()), |v| self.check_value(v))
    }

    /// Runs a backend call under the kv timeout and maps its failure to what
    /// the guest may see; details go to the operator's log.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, KvBackendError>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.tenant.kv_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(KvBackendError::QuotaExceeded)) => Err(Error::QuotaExceeded),
            Ok(Err(KvBackendError::NotAnInteger)) => Err(Error::NotAnInteger),
            Ok(Err(KvBackendError::Unavailable(detail))) => {
                tracing::warn!(project = %self.tenant.project, op, %detail, "kv backend failed");
                Err(Error::Unavailable)
            }
            Err(_) => {
                tracing::warn!(
                    project = %self.tenant.project,
                    op,
                    timeout_ms = self.tenant.kv_timeout.as_millis() as u64,
                    "kv backend timed out"
                );
                Err(Error::Unavailable)
            }
        }
    }
}

fn ttl(ttl_ms: Option<u64>) -> Result<Option<Duration>, Error> {
    match ttl_ms {
        Some(0) => Err(Error::InvalidArgument("ttl-ms must be at least 1".into())),
        other => Ok(other.map(Duration::from_millis)),
    }
}

impl wit::Host for KvView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.begin_with(&key, None)?;
        let t = self.tenant;
        self.call("get", t.kv.get(&t.project, &key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), Error> {
        self.begin_with(&key, Some(&value))?;
        let ttl = ttl(ttl_ms)?;
        let t = self.tenant;
        let quota = t.limits.kv_quota_bytes;
        self.call("set", t.kv.set(&t.project, &key, value, ttl, quota))
            .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        self.begin_with(&key, None)?;
        let t = self.tenant;
        self.call("delete", t.kv.delete(&t.project, &key)).await
    }

    async fn exists(&mut self, key: String) -> Result<bool, Error> {
        self.begin_with(&key, None)?;
        let t = self.tenant;
        self.call("exists", t.kv.exists(&t.project, &key)).await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        self.begin()?;
        let max_key = self.tenant.limits.kv_key_bytes as usize;
        if prefix.len() > max_key {
            return Err(Error::InvalidArgument(format!(
                "the prefix is longer than the key limit of {max_key} bytes"
            )));
        }
        if cursor.as_ref().is_some_and(|c| c.len() > max_key) {
            return Err(Error::InvalidArgument("invalid cursor".into()));
        }
        if limit == 0 {
            return Err(Error::InvalidArgument("limit must be at least 1".into()));
        }
        let limit = limit.min(MAX_LIST_LIMIT);
        let t = self.tenant;
        let page = self
            .call(
                "list-keys",
                t.kv.list_keys(&t.project, &prefix, cursor.as_deref(), limit),
            )
            .await?;
        Ok(KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        self.begin_with(&key, None)?;
        let t = self.tenant;
        let quota = t.limits.kv_quota_bytes;
        self.call("increment", t.kv.increment(&t.project, &key, delta, quota))
            .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        self.begin_with(&key, Some(&new))?;
        let t = self.tenant;
        let quota = t.limits.kv_quota_bytes;
        self.call(
            "compare-and-swap",
            t.kv.compare_and_swap(&t.project, &key, expected, new, quota),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kv::{KeyPage as BackendPage, KvBackend, SqliteKv};
    use crate::ids::ProjectId;
    use crate::limits::Limits;
    use std::sync::Arc;
    use wit::Host;

    /// A real backend whose reads are slowed down, to reach the timeout.
    struct Slow(SqliteKv, Duration);

    #[async_trait::async_trait]
    impl KvBackend for Slow {
        async fn get(&self, ns: &ProjectId, key: &str) -> Result<Option<Vec<u8>>, KvBackendError> {
            tokio::time::sleep(self.1).await;
            self.0.get(ns, key).await
        }
        async fn set(
            &self,
            ns: &ProjectId,
            key: &str,
            value: Vec<u8>,
            ttl: Option<Duration>,
            quota: u64,
        ) -> Result<(), KvBackendError> {
            self.0.set(ns, key, value, ttl, quota).await
        }
        async fn delete(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
            self.0.delete(ns, key).await
        }
        async fn exists(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
            self.0.exists(ns, key).await
        }
        async fn list_keys(
            &self,
            ns: &ProjectId,
            prefix: &str,
            cursor: Option<&str>,
            limit: u32,
        ) -> Result<BackendPage, KvBackendError> {
            self.0.list_keys(ns, prefix, cursor, limit).await
        }
        async fn increment(
            &self,
            ns: &ProjectId,
            key: &str,
            delta: i64,
            quota: u64,
        ) -> Result<i64, KvBackendError> {
            self.0.increment(ns, key, delta, quota).await
        }
        async fn compare_and_swap(
            &self,
            ns: &ProjectId,
            key: &str,
            expected: Option<Vec<u8>>,
            new: Vec<u8>,
            quota: u64,
        ) -> Result<bool, KvBackendError> {
            self.0.compare_and_swap(ns, key, expected, new, quota).await
        }
        async fn usage(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
            self.0.usage(ns).await
        }
        async fn purge(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
            self.0.purge(ns).await
        }
    }

    fn tenant(project: &str, limits: Limits, kv: Arc<dyn KvBackend>) -> TenantCtx {
        TenantCtx::for_tests(ProjectId::new(project).unwrap(), limits, kv)
    }

    fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn KvBackend> {
        Arc::new(SqliteKv::open(dir.path().join("kv.sqlite")).unwrap())
    }

    #[tokio::test]
    async fn every_call_counts_against_the_request_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            kv_calls: 3,
            ..Limits::default()
        };
        let tenant = tenant("p", limits, sqlite(&dir));
        let mut calls = 0;
        let mut kv = KvView {
            tenant: &tenant,
            calls: &mut calls,
        };
        assert_eq!(kv.set("k".into(), b"v".to_vec(), None).await, Ok(()));
        // A refused call still counts: validation is not free.
        assert!(matches!(
            kv.get(String::new()).await,
            Err(Error::InvalidKey(_))
        ));
        assert_eq!(kv.get("k".into()).await, Ok(Some(b"v".to_vec())));
        assert_eq!(kv.get("k".into()).await, Err(Error::LimitExceeded));
        assert_eq!(
            kv.list_keys(String::new(), None, 10).await,
            Err(Error::LimitExceeded)
        );
    }

    #[tokio::test]
    async fn keys_values_ttls_and_list_arguments_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            kv_key_bytes: 8,
            kv_value_bytes: 4,
            ..Limits::default()
        };
        let tenant = tenant("p", limits, sqlite(&dir));
        let mut calls = 0;
        let mut kv = KvView {
            tenant: &tenant,
            calls: &mut calls,
        };
        assert_eq!(
            kv.set("12345678".into(), b"1234".to_vec(), None).await,
            Ok(())
        );
        match kv.get("123456789".into()).await {
            Err(Error::InvalidKey(why)) => assert_eq!(why, "the key is 9 bytes; the limit is 8"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            kv.set("k".into(), b"12345".to_vec(), None).await,
            Err(Error::ValueTooLarge)
        );
        assert_eq!(
            kv.compare_and_swap("k".into(), None, b"12345".to_vec())
                .await,
            Err(Error::ValueTooLarge)
        );
        assert!(matches!(
            kv.set("k".into(), b"v".to_vec(), Some(0)).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.list_keys(String::new(), None, 0).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.list_keys("123456789".into(), None, 1).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            kv.list_keys(String::new(), Some("123456789".into()), 1)
                .await,
            Err(Error::InvalidArgument(_))
        ));
        let page = kv.list_keys(String::new(), None, u32::MAX).await.unwrap();
        assert_eq!(page.keys, ["12345678"]);
    }

    #[tokio::test]
    async fn the_namespace_is_the_tenants_project() {
        let dir = tempfile::tempdir().unwrap();
        let backend = sqlite(&dir);
        let a = tenant("a", Limits::default(), backend.clone());
        let b = tenant("b", Limits::default(), backend.clone());
        let (mut calls_a, mut calls_b) = (0, 0);
        let mut kv_a = KvView {
            tenant: &a,
            calls: &mut calls_a,
        };
        let mut kv_b = KvView {
            tenant: &b,
            calls: &mut calls_b,
        };
        kv_a.set("shared-name".into(), b"a".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(kv_b.get("shared-name".into()).await, Ok(None));
        assert_eq!(kv_b.increment("shared-name".into(), 2).await, Ok(2));
        assert_eq!(
            kv_a.get("shared-name".into()).await,
            Ok(Some(b"a".to_vec()))
        );
        let ns_a = ProjectId::new("a").unwrap();
        assert_eq!(
            backend.get(&ns_a, "shared-name").await,
            Ok(Some(b"a".to_vec()))
        );
    }

    #[tokio::test]
    async fn a_slow_backend_is_unavailable_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let slow = Slow(
            SqliteKv::open(dir.path().join("kv.sqlite")).unwrap(),
            Duration::from_secs(5),
        );
        let mut tenant = tenant("p", Limits::default(), Arc::new(slow));
        tenant.kv_timeout = Duration::from_millis(50);
        let mut calls = 0;
        let mut kv = KvView {
            tenant: &tenant,
            calls: &mut calls,
        };
        let started = std::time::Instant::now();
        assert_eq!(kv.get("k".into()).await, Err(Error::Unavailable));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            kv.set("k".into(), b"v".to_vec(), None).await,
            Ok(()),
            "writes are not slowed"
        );
    }

    #[tokio::test]
    async fn backend_errors_map_to_their_wit_errors() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            kv_quota_bytes: 100,
            ..Limits::default()
        };
        let tenant = tenant("p", limits, sqlite(&dir));
        let mut calls = 0;
        let mut kv = KvView {
            tenant: &tenant,
            calls: &mut calls,
        };
        assert_eq!(
            kv.set("k".into(), vec![b'x'; 40], None).await,
            Err(Error::QuotaExceeded)
        );
        kv.set("k".into(), b"x".to_vec(), None).await.unwrap();
        assert_eq!(kv.increment("k".into(), 1).await, Err(Error::NotAnInteger));
    }
}
