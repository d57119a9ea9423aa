//! The project's key-value store (`switchyard:gateway/kv`).
//!
//! Keys belong to your project: the host namespaces them, so no key string can
//! reach another project's data. Keys are 1–512 bytes, values up to 1 MiB,
//! and a request may make up to 1000 kv calls (the host's defaults). Writes
//! are durable once the call returns.
//!
//! ```no_run
//! use switchyard_sdk::kv;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), kv::Error> {
//! let visits = kv::increment("visits", 1)?;
//! kv::set_with_ttl("session:abc", b"alice", Duration::from_secs(600))?;
//! if let Some(user) = kv::get_string("session:abc")? {
//!     println!("{user} is visit number {visits}");
//! }
//! for key in kv::list_keys("session:") {
//!     println!("{}", key?);
//! }
//! # Ok(())
//! # }
//! ```

use crate::bindings::switchyard::gateway::kv as wit;
use crate::response::{IntoResponse, Response};
use std::fmt;
use std::time::Duration;

/// Why a kv call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The key is empty or too long; the text says which.
    InvalidKey(String),
    /// The value is larger than the value limit.
    ValueTooLarge,
    /// The write would take the project past its storage quota.
    QuotaExceeded,
    /// This request has made its maximum number of kv calls.
    LimitExceeded,
    /// `increment` found a value that is not a decimal `i64`, or would overflow.
    NotAnInteger,
    /// An argument is out of range; the text says which.
    InvalidArgument(String),
    /// The store did not answer in time or is down; retrying may work.
    Unavailable,
    /// A stored value could not be decoded as the type asked for (from
    /// [`get_json`]); the text says why.
    Decode(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::ValueTooLarge => f.write_str("value too large"),
            Error::QuotaExceeded => f.write_str("storage quota exceeded"),
            Error::LimitExceeded => f.write_str("kv call limit for this request reached"),
            Error::NotAnInteger => f.write_str("value is not a 64-bit integer"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Unavailable => f.write_str("kv store unavailable"),
            Error::Decode(why) => write!(f, "stored value could not be decoded: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidKey(why) => Error::InvalidKey(why),
            wit::Error::ValueTooLarge => Error::ValueTooLarge,
            wit::Error::QuotaExceeded => Error::QuotaExceeded,
            wit::Error::LimitExceeded => Error::LimitExceeded,
            wit::Error::NotAnInteger => Error::NotAnInteger,
            wit::Error::InvalidArgument(why) => Error::InvalidArgument(why),
            wit::Error::Unavailable => Error::Unavailable,
        }
    }
}

impl Error {
    /// The HTTP status that best describes this error to a client.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidKey(_) | Error::InvalidArgument(_) | Error::NotAnInteger => 400,
            Error::ValueTooLarge => 413,
            Error::LimitExceeded => 429,
            Error::QuotaExceeded => 507,
            Error::Unavailable => 503,
            Error::Decode(_) => 500,
        }
    }
}

/// A handler can return `Err(kv::Error)` (or use `?`) and the client gets a
/// plain-text error with a fitting status.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Response::text(format!("{self}\n")).with_status(self.status())
    }
}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        e.into_response()
    }
}

/// The value stored under `key`, or `None`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    Ok(wit::get(key)?)
}

/// The value under `key` as text (invalid UTF-8 replaced), or `None`.
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    Ok(get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The value under `key` parsed as JSON, or `None`.
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?
        .map(|v| serde_json::from_slice(&v).map_err(|e| Error::Decode(e.to_string())))
        .transpose()
}

/// Stores `value` under `key` with no expiry, replacing what was there.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(wit::set(key, value.as_ref(), None)?)
}

/// Stores `value` under `key`; it expires after `ttl` (rounded up to whole
/// milliseconds).
pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl: Duration) -> Result<(), Error> {
    Ok(wit::set(key, value.as_ref(), Some(ttl_millis(ttl)))?)
}

/// Stores `value` serialised as JSON, with no expiry.
pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    set(key, bytes)
}

/// Removes `key`; returns whether it existed.
pub fn delete(key: &str) -> Result<bool, Error> {
    Ok(wit::delete(key)?)
}

/// Whether `key` holds an unexpired value.
pub fn exists(key: &str) -> Result<bool, Error> {
    Ok(wit::exists(key)?)
}

/// Atomically adds `delta` to the integer under `key` (0 if missing) and
/// returns the result.
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    Ok(wit::increment(key, delta)?)
}

/// Atomically sets `key` to `new` if it currently holds `expected` (`None`:
/// if it does not exist). Returns whether it did.
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, Error> {
    Ok(wit::compare_and_swap(key, expected, new)?)
}

/// One page of keys from [`list_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Keys in ascending byte order.
    pub keys: Vec<String>,
    /// Where the next page starts; `None` when the listing is complete.
    pub cursor: Option<String>,
}

/// One page of at most `limit` keys that start with `prefix`, from `cursor`.
pub fn list_page(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
    let page = wit::list_keys(prefix, cursor, limit)?;
    Ok(Page {
        keys: page.keys,
        cursor: page.cursor,
    })
}

/// Every key that starts with `prefix`, fetched a page at a time. Each page
/// is one kv call.
pub fn list_keys(prefix: &str) -> Keys {
    Keys {
        prefix: prefix.to_string(),
        cursor: None,
        buffered: Vec::new().into_iter(),
        done: false,
    }
}

/// Iterator returned by [`list_keys`].
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    cursor: Option<String>,
    buffered: std::vec::IntoIter<String>,
    done: bool,
}

impl Iterator for Keys {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.buffered.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            match list_page(&self.prefix, self.cursor.as_deref(), 1000) {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.cursor = page.cursor;
                    self.buffered = page.keys.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn errors_map_to_statuses_and_responses() {
        assert_eq!(Error::Unavailable.status(), 503);
        assert_eq!(Error::LimitExceeded.status(), 429);
        let r = Error::QuotaExceeded.into_response();
        assert_eq!(r.status(), 507);
        assert_eq!(r.body(), b"storage quota exceeded\n");
        let r: Response = Error::InvalidKey("empty".into()).into();
        assert_eq!(r.status(), 400);
    }

    #[test]
    fn wit_errors_convert() {
        assert_eq!(Error::from(wit::Error::NotAnInteger), Error::NotAnInteger);
        assert_eq!(
            Error::from(wit::Error::InvalidArgument("ttl".into())),
            Error::InvalidArgument("ttl".into())
        );
    }
}
