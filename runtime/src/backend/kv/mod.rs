//! Key-value storage behind `switchyard:gateway/kv`.
//!
//! A [`KvBackend`] stores bytes under `(namespace, key)`. The namespace is
//! always the calling project's id, chosen by the host from the request's
//! tenant context; backends must keep namespaces fully apart and must never
//! derive one from a key. Sizes, call counts and key validity are checked by
//! the host before a backend is called; the storage quota is enforced by the
//! backend because it has to be atomic with the write.

#[cfg(any(test, feature = "testing"))]
pub mod contract;
mod redis;
mod sqlite;

pub use redis::RedisKv;
pub use sqlite::SqliteKv;

use crate::ids::ProjectId;
use std::time::Duration;

/// What each stored key costs against a quota on top of its key and value
/// bytes, so that a quota also bounds the number of entries (and the storage
/// each one really takes). Every backend must account this way.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// One page of [`KvBackend::list_keys`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` when the listing is complete.
    pub cursor: Option<String>,
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvBackendError {
    /// The write would take the namespace past its quota.
    #[error("storage quota exceeded")]
    QuotaExceeded,
    /// `increment` found a non-integer value, or the sum overflowed.
    #[error("the value is not a 64-bit integer")]
    NotAnInteger,
    /// The store is unreachable or failed; the text is for the operator only.
    #[error("kv store unavailable: {0}")]
    Unavailable(String),
}

/// Storage for kv data. Every method is atomic on its own; `increment` and
/// `compare_and_swap` are atomic read-modify-writes. Expired keys behave as
/// absent everywhere; a backend may delete them lazily.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// The value under `key`, if present and unexpired.
    async fn get(&self, ns: &ProjectId, key: &str) -> Result<Option<Vec<u8>>, KvBackendError>;

    /// Stores `value` under `key`, replacing the value and TTL it had. Fails
    /// with `QuotaExceeded` if the namespace would hold more than
    /// `quota_bytes` (keys plus values plus [`ENTRY_OVERHEAD_BYTES`] per key);
    /// a write that does not grow the namespace always succeeds.
    async fn set(
        &self,
        ns: &ProjectId,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota_bytes: u64,
    ) -> Result<(), KvBackendError>;

    /// Removes `key`; returns whether an unexpired value was there.
    async fn delete(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError>;

    /// Whether an unexpired value is under `key`.
    async fn exists(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError>;

    /// Up to `limit` unexpired keys starting with `prefix`, in ascending byte
    /// order, after `cursor` (a value this method returned earlier).
    async fn list_keys(
        &self,
        ns: &ProjectId,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, KvBackendError>;

    /// Adds `delta` to the decimal integer under `key` (absent counts as 0),
    /// keeping its TTL, and returns the result.
    async fn increment(
        &self,
        ns: &ProjectId,
        key: &str,
        delta: i64,
        quota_bytes: u64,
    ) -> Result<i64, KvBackendError>;

    /// Sets `key` to `new` (without TTL) if its current value equals
    /// `expected` (`None`: absent). Returns whether it did.
    async fn compare_and_swap(
        &self,
        ns: &ProjectId,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<bool, KvBackendError>;

    /// Bytes the namespace holds as counted for its quota (keys plus values
    /// plus [`ENTRY_OVERHEAD_BYTES`] per key). May include expired keys not
    /// yet removed.
    async fn usage(&self, ns: &ProjectId) -> Result<u64, KvBackendError>;

    /// Removes every key of the namespace and its usage; returns how many
    /// keys there were (expired ones included). For a deleted project, so
    /// that a new project with the same id starts empty.
    async fn purge(&self, ns: &ProjectId) -> Result<u64, KvBackendError>;

    /// Whether the store answers (for readiness checks); an embedded one
    /// always does.
    async fn ping(&self) -> Result<(), KvBackendError> {
        Ok(())
    }
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` if there is none (empty prefix, or all `0xff`): the exclusive upper
/// bound of a prefix scan.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_exclusive_upper_bound() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
