//! The shared kv backend: Redis, for many nodes.
//!
//! A namespace's keys all carry its project id as a hash tag
//! (`<prefix>:kv:{<project>}:…`), so they live in one slot and every
//! script below touches one slot only: the layout works unchanged on a
//! Redis Cluster. Per namespace:
//!
//! - `…:v:<key>`: the value, with Redis's own expiry for a TTL;
//! - `…:i`: a sorted set of the keys (all score 0), for listing in byte
//!   order by prefix;
//! - `…:c`: a hash of each key's quota charge, so an expired key's charge
//!   can be given back after Redis has dropped its value;
//! - `…:x`: a sorted set of keys by expiry time (Unix ms), which every write
//!   sweeps for keys Redis has expired;
//! - `…:u`: the namespace's usage in bytes.
//!
//! Every write is one Lua script, so it is atomic with its quota check and
//! its bookkeeping; reads of a value are plain `GET`/`EXISTS`. Durability is
//! Redis's: run it with `appendonly yes` and `appendfsync always` for a
//! write to survive a crash once acknowledged (see docs/CLUSTER.md).

use super::{ENTRY_OVERHEAD_BYTES, KeyPage, KvBackend, KvBackendError, prefix_end};
use crate::backend::redis::{RedisConn, RedisFailure};
use crate::ids::ProjectId;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// Expired keys whose charge each write gives back, at most.
const SWEEP_PER_WRITE: u32 = 16;

/// Expired keys a write that would not fit gives back before it is
/// refused: keys that expired en masse must not make the quota look full.
const SWEEP_BEFORE_REFUSING: u32 = 1000;

/// The longest TTL stored (100 years); longer ones are cut to it, as the
/// server's clock plus a TTL must fit Redis's 64-bit expiry.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Keys a listing may look at before it returns a short page (with a
/// cursor): bounds the script's time when many listed keys have expired.
const LIST_SCAN_BUDGET: u32 = 512;

/// Keys a `purge` step deletes; the step repeats until the namespace is
/// empty, so no single script holds Redis for long.
const PURGE_STEP: u32 = 500;

/// Shared by every script: its keys, the server's clock, and the
/// bookkeeping helpers.
///
/// KEYS: 1 index, 2 charges, 3 expiries, 4 usage. ARGV[1]: the value-key
/// prefix. Script-specific arguments start at ARGV[2].
const PRELUDE: &str = r"
local idx, charges, expiries, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local vprefix = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Drops a key's bookkeeping and gives its charge back.
local function forget(k)
  local c = tonumber(redis.call('HGET', charges, k) or '0')
  if c > 0 then redis.call('DECRBY', usage, c) end
  redis.call('HDEL', charges, k)
  redis.call('ZREM', idx, k)
  redis.call('ZREM', expiries, k)
end

-- Forgets up to n keys that Redis has expired.
local function sweep(n)
  local due = redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, n)
  for _, k in ipairs(due) do
    if redis.call('EXISTS', vprefix .. k) == 0 then forget(k) end
  end
end

-- The charge a key holds now: 0 if it is absent (forgetting an expired one).
local function charge_of(k)
  if redis.call('EXISTS', vprefix .. k) == 1 then
    return tonumber(redis.call('HGET', charges, k) or '0')
  end
  forget(k)
  return 0
end

-- Whether a change from `old` to `new` bytes fits in `quota`. A write that
-- does not grow the namespace always fits; one that does not fit first
-- gives back the charge of more expired keys.
local function fits(old, new, quota)
  if new <= old then return true end
  local used = tonumber(redis.call('GET', usage) or '0')
  if used - old + new <= quota then return true end
  sweep(DEEP_SWEEP)
  used = tonumber(redis.call('GET', usage) or '0')
  return used - old + new <= quota
end

-- Records key k's new charge.
local function charge(k, old, new)
  redis.call('HSET', charges, k, new)
  redis.call('ZADD', idx, 0, k)
  if new ~= old then redis.call('INCRBY', usage, new - old) end
end
";

/// ARGV: 2 key, 3 value, 4 TTL in ms (0: none), 5 quota.
/// Returns 1, or -1 over quota.
static SET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
sweep(SWEEP)
local k, val, ttl, quota = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local old = charge_of(k)
local new = #k + #val + OVERHEAD
if not fits(old, new, quota) then return -1 end
if ttl > 0 then
  redis.call('SET', vprefix .. k, val, 'PX', ttl)
  redis.call('ZADD', expiries, now + ttl, k)
else
  redis.call('SET', vprefix .. k, val)
  redis.call('ZREM', expiries, k)
end
charge(k, old, new)
return 1
",
    )
});

/// ARGV: 2 key. Returns 1 if an unexpired value was deleted, else 0.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
sweep(SWEEP)
local k = ARGV[2]
local deleted = redis.call('DEL', vprefix .. k)
forget(k)
return deleted
",
    )
});

/// ARGV: 2 key, 3 delta, 4 quota. Returns {1, value as text}, {-1, ''}
/// over quota, {-2, ''} not an integer (or overflow).
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
sweep(SWEEP)
local k, delta, quota = ARGV[2], ARGV[3], tonumber(ARGV[4])
local v = vprefix .. k
local old = charge_of(k)
local before = redis.call('GET', v)
-- INCRBY does the 64-bit arithmetic (Lua numbers are doubles) and keeps
-- the TTL; it refuses non-integers and overflow.
local result = redis.pcall('INCRBY', v, delta)
if type(result) == 'table' and result.err then return {-2, ''} end
local value = redis.call('GET', v)
local new = #k + #value + OVERHEAD
if not fits(old, new, quota) then
  if before then redis.call('SET', v, before, 'KEEPTTL') else redis.call('DEL', v) end
  return {-1, ''}
end
charge(k, old, new)
return {1, value}
",
    )
});

/// ARGV: 2 key, 3 whether a value is expected (1/0), 4 expected value,
/// 5 new value, 6 quota. Returns 1 swapped, 0 not, -1 over quota.
static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
sweep(SWEEP)
local k, expect, expected, val, quota = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local old = charge_of(k)
local current = redis.call('GET', vprefix .. k)
if expect == '1' then
  if current ~= expected then return 0 end
elseif current then
  return 0
end
local new = #k + #val + OVERHEAD
if not fits(old, new, quota) then return -1 end
redis.call('SET', vprefix .. k, val)
redis.call('ZREM', expiries, k)
charge(k, old, new)
return 1
",
    )
});

/// ARGV: 2 lower bound (ZRANGEBYLEX syntax), 3 upper bound, 4 limit.
/// Returns {more ('1'/'0'), cursor or '', keys…}.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local lo, hi, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local out, scanned, last, exhausted = {}, 0, nil, false
while #out <= limit and scanned < BUDGET do
  local batch = redis.call('ZRANGEBYLEX', idx, lo, hi, 'LIMIT', 0, limit + 1 - #out)
  if #batch == 0 then exhausted = true break end
  for _, k in ipairs(batch) do
    scanned = scanned + 1
    last = k
    if redis.call('EXISTS', vprefix .. k) == 1 then out[#out + 1] = k else forget(k) end
    if #out > limit then break end
  end
  lo = '(' .. last
end
if #out > limit then
  table.remove(out)
  local reply = {'1', out[#out]}
  for _, k in ipairs(out) do reply[#reply + 1] = k end
  return reply
end
local reply = {'0', ''}
if not exhausted and last then reply = {'1', last} end
for _, k in ipairs(out) do reply[#reply + 1] = k end
return reply
",
    )
});

/// Returns the namespace's usage after a sweep.
static USAGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
sweep(SWEEP * 4)
return tonumber(redis.call('GET', usage) or '0')
",
    )
});

/// Deletes up to STEP keys of the namespace, and its bookkeeping once it is
/// empty. Returns {keys deleted, keys left}.
static PURGE_STEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local keys = redis.call('ZRANGE', idx, 0, STEP - 1)
for _, k in ipairs(keys) do
  redis.call('DEL', vprefix .. k)
  redis.call('ZREM', idx, k)
end
local left = redis.call('ZCARD', idx)
if left == 0 then redis.call('DEL', charges, expiries, usage) end
return {#keys, left}
",
    )
});

fn script(body: &str) -> Script {
    let source = format!("{PRELUDE}{body}")
        .replace("DEEP_SWEEP", &SWEEP_BEFORE_REFUSING.to_string())
        .replace("SWEEP", &SWEEP_PER_WRITE.to_string())
        .replace("OVERHEAD", &ENTRY_OVERHEAD_BYTES.to_string())
        .replace("BUDGET", &LIST_SCAN_BUDGET.to_string())
        .replace("STEP", &PURGE_STEP.to_string());
    Script::new(&source)
}

/// kv data in Redis. See the module docs.
pub struct RedisKv {
    redis: RedisConn,
    prefix: String,
}

/// One namespace's keys.
struct Keys {
    index: String,
    charges: String,
    expiries: String,
    usage: String,
    values: String,
}

impl From<RedisFailure> for KvBackendError {
    fn from(e: RedisFailure) -> Self {
        KvBackendError::Unavailable(e.to_string())
    }
}

impl RedisKv {
    /// kv data on `redis`, under keys starting with `<prefix>:kv:`.
    pub fn new(redis: RedisConn, prefix: &str) -> RedisKv {
        RedisKv {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    fn keys(&self, ns: &ProjectId) -> Keys {
        let base = format!("{}:kv:{{{ns}}}:", self.prefix);
        Keys {
            index: format!("{base}i"),
            charges: format!("{base}c"),
            expiries: format!("{base}x"),
            usage: format!("{base}u"),
            values: format!("{base}v:"),
        }
    }

    /// An invocation of `script` on `ns`'s keys; script arguments follow.
    fn invoke<'a>(&self, script: &'a Script, ns: &ProjectId) -> redis::ScriptInvocation<'a> {
        let keys = self.keys(ns);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.index)
            .key(keys.charges)
            .key(keys.expiries)
            .key(keys.usage)
            .arg(keys.values);
        invocation
    }

    fn value_key(&self, ns: &ProjectId, key: &str) -> Vec<u8> {
        let mut name = self.keys(ns).values.into_bytes();
        name.extend_from_slice(key.as_bytes());
        name
    }
}

/// A TTL in whole milliseconds, from 1 (0 means none to the scripts) to
/// [`MAX_TTL_MS`].
fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| {
        u64::try_from(t.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TTL_MS)
    })
}

#[async_trait::async_trait]
impl KvBackend for RedisKv {
    async fn get(&self, ns: &ProjectId, key: &str) -> Result<Option<Vec<u8>>, KvBackendError> {
        let cmd = redis::cmd("GET").arg(self.value_key(ns, key)).clone();
        Ok(self.redis.query(&cmd).await?)
    }

    async fn set(
        &self,
        ns: &ProjectId,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        quota_bytes: u64,
    ) -> Result<(), KvBackendError> {
        let mut invocation = self.invoke(&SET, ns);
        invocation
            .arg(key.as_bytes())
            .arg(value)
            .arg(ttl_ms(ttl))
            .arg(quota_bytes);
        match self.redis.script::<i64>(&invocation).await? {
            -1 => Err(KvBackendError::QuotaExceeded),
            _ => Ok(()),
        }
    }

    async fn delete(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
        let mut invocation = self.invoke(&DELETE, ns);
        invocation.arg(key.as_bytes());
        Ok(self.redis.script::<i64>(&invocation).await? == 1)
    }

    async fn exists(&self, ns: &ProjectId, key: &str) -> Result<bool, KvBackendError> {
        let cmd = redis::cmd("EXISTS").arg(self.value_key(ns, key)).clone();
        Ok(self.redis.query::<i64>(&cmd).await? == 1)
    }

    async fn list_keys(
        &self,
        ns: &ProjectId,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, KvBackendError> {
        let bound = |mark: u8, key: &[u8]| {
            let mut b = vec![mark];
            b.extend_from_slice(key);
            b
        };
        // A cursor sorting before the prefix (one the caller made up) must
        // not widen the listing beyond the prefix.
        let lower = match cursor {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => bound(b'(', after.as_bytes()),
            _ if prefix.is_empty() => b"-".to_vec(),
            _ => bound(b'[', prefix.as_bytes()),
        };
        let upper =
            prefix_end(prefix.as_bytes()).map_or_else(|| b"+".to_vec(), |end| bound(b'(', &end));
        let mut invocation = self.invoke(&LIST, ns);
        invocation.arg(lower).arg(upper).arg(limit.max(1));
        let reply: Vec<Vec<u8>> = self.redis.script(&invocation).await?;
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes)
                .map_err(|_| KvBackendError::Unavailable("a stored key is not UTF-8".into()))
        };
        let mut reply = reply.into_iter();
        let more = reply.next().is_some_and(|m| m == b"1");
        let cursor = reply.next().map(text).transpose()?;
        let keys = reply.map(text).collect::<Result<Vec<_>, _>>()?;
        Ok(KeyPage {
            keys,
            cursor: if more { cursor } else { None },
        })
    }

    async fn increment(
        &self,
        ns: &ProjectId,
        key: &str,
        delta: i64,
        quota_bytes: u64,
    ) -> Result<i64, KvBackendError> {
        let mut invocation = self.invoke(&INCREMENT, ns);
        invocation.arg(key.as_bytes()).arg(delta).arg(quota_bytes);
        let reply: (i64, String) = self.redis.script(&invocation).await?;
        match reply {
            (1, value) => value.parse().map_err(|_| KvBackendError::NotAnInteger),
            (-1, _) => Err(KvBackendError::QuotaExceeded),
            _ => Err(KvBackendError::NotAnInteger),
        }
    }

    async fn compare_and_swap(
        &self,
        ns: &ProjectId,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota_bytes: u64,
    ) -> Result<bool, KvBackendError> {
        let mut invocation = self.invoke(&COMPARE_AND_SWAP, ns);
        invocation
            .arg(key.as_bytes())
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(quota_bytes);
        match self.redis.script::<i64>(&invocation).await? {
            -1 => Err(KvBackendError::QuotaExceeded),
            swapped => Ok(swapped == 1),
        }
    }

    async fn usage(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
        let invocation = self.invoke(&USAGE, ns);
        let used: i64 = self.redis.script(&invocation).await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), KvBackendError> {
        self.redis.query::<String>(&redis::cmd("PING")).await?;
        Ok(())
    }

    async fn purge(&self, ns: &ProjectId) -> Result<u64, KvBackendError> {
        let mut purged = 0;
        loop {
            let invocation = self.invoke(&PURGE_STEP_SCRIPT, ns);
            let (deleted, left): (u64, u64) = self.redis.script(&invocation).await?;
            purged += deleted;
            if left == 0 {
                return Ok(purged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_kv_contract() {
        let redis = switchyard_test_services::shared_redis();
        let conn = RedisConn::open(&redis.url(), Duration::from_secs(5), None).unwrap();
        let kv = RedisKv::new(conn, "contract");
        crate::backend::kv::contract::kv_contract(&kv).await;
    }
}
