//! Request limits shared by every node: the same token bucket and daily
//! count as [`super::LocalLimiter`], kept in Redis and updated by one Lua
//! script per request, so N nodes together admit no more than one would.
//! Time is Redis's (`TIME`), so nodes' clocks never matter.
//!
//! Keys carry the project as a hash tag (`<prefix>:rl:{<project>}`), so a
//! Redis Cluster spreads projects over its shards. When Redis fails or
//! does not answer in time, the limiter fails closed (503 with Retry-After)
//! unless configured to fail open.

use super::{Refusal, RequestLimiter};
use crate::routing::RateSpec;
use redis::Script;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use switchyard_runtime::ProjectId;
use switchyard_runtime::backend::redis::RedisConn;

/// KEYS: bucket, day-count prefix. ARGV: per minute, burst, daily quota.
/// Returns {0} admitted, {1, seconds} rate limited, {2, seconds} quota.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local secs = tonumber(t[1])
local now = secs * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute, burst, daily = tonumber(ARGV[1]), math.max(tonumber(ARGV[2]), 1), tonumber(ARGV[3])
local day_key = KEYS[2] .. math.floor(secs / 86400)
if daily > 0 and tonumber(redis.call('GET', day_key) or '0') >= daily then
  return {2, 86400 - secs % 86400}
end
local rate = per_minute / 60000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
-- Idle long enough to be full again, the bucket need not be kept.
local full_after = 86400000
if rate > 0 then full_after = math.ceil(burst / rate) + 1000 end
if tokens < 1 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[1], full_after)
  if rate <= 0 then return {1, 60} end
  return {1, math.max(1, math.ceil((1 - tokens) / rate / 1000))}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', now)
redis.call('PEXPIRE', KEYS[1], full_after)
redis.call('INCR', day_key)
redis.call('EXPIRE', day_key, 2 * 86400)
return {0}
",
    )
});

/// KEYS: bucket, day-count prefix. Drops the bucket and today's count.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
redis.call('DEL', KEYS[1], KEYS[2] .. day, KEYS[2] .. (day - 1))
return 1
",
    )
});

/// Limits kept in Redis. See the module docs.
pub struct RedisLimiter {
    redis: RedisConn,
    prefix: String,
    fail_open: bool,
    /// Failures since the last success (logged once per outage, then every
    /// 1000th, not once per request).
    unlogged_failures: AtomicU64,
}

impl RedisLimiter {
    /// A limiter on `redis` with keys under `<prefix>:rl:`. With
    /// `fail_open`, a request is admitted when Redis cannot be asked.
    pub fn new(redis: RedisConn, prefix: &str, fail_open: bool) -> RedisLimiter {
        RedisLimiter {
            redis,
            prefix: prefix.to_owned(),
            fail_open,
            unlogged_failures: AtomicU64::new(0),
        }
    }

    fn keys(&self, project: &ProjectId) -> (String, String) {
        let bucket = format!("{}:rl:{{{project}}}", self.prefix);
        let days = format!("{bucket}:day:");
        (bucket, days)
    }
}

#[async_trait::async_trait]
impl RequestLimiter for RedisLimiter {
    async fn admit(&self, project: &ProjectId, spec: RateSpec) -> Result<(), Refusal> {
        let (bucket, days) = self.keys(project);
        let mut invocation = ADMIT.prepare_invoke();
        invocation
            .key(bucket)
            .key(days)
            .arg(spec.per_minute)
            .arg(spec.burst)
            .arg(spec.daily);
        let outcome = self.redis.script::<Vec<u64>>(&invocation).await;
        if outcome.is_ok() && self.unlogged_failures.swap(0, Ordering::Relaxed) > 0 {
            tracing::info!("the shared rate limiter reaches redis again");
        }
        match outcome {
            Ok(reply) => match reply.as_slice() {
                [1, retry_after] => Err(Refusal::RateLimited {
                    retry_after: *retry_after,
                }),
                [2, retry_after] => Err(Refusal::QuotaExceeded {
                    retry_after: *retry_after,
                }),
                _ => Ok(()),
            },
            Err(e) => {
                // Log the first failure of a burst, then every 1000th.
                if self
                    .unlogged_failures
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
                {
                    tracing::error!(
                        error = %e,
                        fail_open = self.fail_open,
                        "the shared rate limiter cannot reach redis"
                    );
                }
                if self.fail_open {
                    Ok(())
                } else {
                    Err(Refusal::Unavailable { retry_after: 1 })
                }
            }
        }
    }

    async fn ping(&self) -> Result<(), String> {
        self.redis
            .query::<String>(&redis::cmd("PING"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn forget(&self, project: &ProjectId) {
        let (bucket, days) = self.keys(project);
        let mut invocation = FORGET.prepare_invoke();
        invocation.key(bucket).key(days);
        if let Err(e) = self.redis.script::<i64>(&invocation).await {
            tracing::warn!(project = %project, error = %e, "cannot reset the rate limits of a deleted project");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(fail_open: bool, url: &str) -> RedisLimiter {
        let conn = RedisConn::open(url, Duration::from_millis(500), None).unwrap();
        RedisLimiter::new(conn, "limits-test", fail_open)
    }

    #[tokio::test]
    async fn nodes_share_one_bucket_and_one_daily_count() {
        let url = switchyard_test_services::shared_redis().url();
        let (a, b) = (limiter(false, &url), limiter(false, &url));
        let project = ProjectId::new(&format!("rl-{}", rand::random::<u32>())).unwrap();
        let spec = RateSpec {
            per_minute: 1,
            burst: 4,
            daily: 0,
        };
        let mut admitted = 0;
        for i in 0..10 {
            let node = if i % 2 == 0 { &a } else { &b };
            if node.admit(&project, spec).await.is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 4, "the burst is shared");
        match a.admit(&project, spec).await {
            Err(Refusal::RateLimited { retry_after }) => assert!((1..=60).contains(&retry_after)),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // A deleted project's id starts afresh.
        b.forget(&project).await;
        assert!(a.admit(&project, spec).await.is_ok());

        let quota = ProjectId::new(&format!("rq-{}", rand::random::<u32>())).unwrap();
        let spec = RateSpec {
            per_minute: 6000,
            burst: 100,
            daily: 3,
        };
        for node in [&a, &b, &a] {
            assert!(node.admit(&quota, spec).await.is_ok());
        }
        match b.admit(&quota, spec).await {
            Err(Refusal::QuotaExceeded { retry_after }) => assert!(retry_after <= 86_400),
            other => panic!("expected the quota, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_closed_unless_told_otherwise() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let project = ProjectId::new("anyone").unwrap();
        let spec = RateSpec {
            per_minute: 60,
            burst: 10,
            daily: 0,
        };
        let started = std::time::Instant::now();
        assert_eq!(
            limiter(false, &url).admit(&project, spec).await,
            Err(Refusal::Unavailable { retry_after: 1 })
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(limiter(true, &url).admit(&project, spec).await, Ok(()));
    }
}
