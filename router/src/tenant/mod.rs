//! Per-project request limits: a rate (requests per minute, with a burst)
//! and a daily quota. Behind a trait: this node's in-process limiter here,
//! and one shared by many nodes in [`RedisLimiter`].

mod redis;

pub use redis::RedisLimiter;

use crate::routing::RateSpec;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchyard_runtime::ProjectId;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate; a request may succeed after this many seconds.
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The daily quota is used up until the next UTC day.
    QuotaExceeded {
        /// Seconds until midnight UTC.
        retry_after: u64,
    },
    /// The shared limiter cannot be asked (and fails closed).
    Unavailable {
        /// Seconds to wait.
        retry_after: u64,
    },
}

/// Admits or refuses each request of a project.
#[async_trait::async_trait]
pub trait RequestLimiter: Send + Sync + 'static {
    /// Counts one request of `project` under `spec`, or says why not.
    async fn admit(&self, project: &ProjectId, spec: RateSpec) -> Result<(), Refusal>;
    /// Drops `project`'s counters: it was deleted, and a project created
    /// under its id starts afresh.
    async fn forget(&self, project: &ProjectId);
    /// Whether the limiter's store answers (for readiness checks); the
    /// detail is for the operator.
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Limits kept in this process's memory.
pub struct LocalLimiter {
    projects: moka::sync::Cache<ProjectId, Arc<Mutex<ProjectCounters>>>,
}

struct ProjectCounters {
    tokens: f64,
    refilled: Instant,
    day: u64,
    today: u64,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter {
            // Idle projects are forgotten (their bucket would be full again
            // anyway); the daily count of a project idle for an hour is lost,
            // which errs towards admitting.
            projects: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl RequestLimiter for LocalLimiter {
    async fn forget(&self, project: &ProjectId) {
        self.projects.invalidate(project);
    }

    async fn admit(&self, project: &ProjectId, spec: RateSpec) -> Result<(), Refusal> {
        let counters = self.projects.get_with_by_ref(project, || {
            Arc::new(Mutex::new(ProjectCounters {
                tokens: f64::from(spec.burst.max(1)),
                refilled: Instant::now(),
                day: utc_day(),
                today: 0,
            }))
        });
        let mut c = counters.lock().unwrap_or_else(PoisonError::into_inner);
        check(&mut c, spec, Instant::now(), SystemTime::now())
    }
}

/// The token bucket and the day counter, at `now`.
fn check(
    c: &mut ProjectCounters,
    spec: RateSpec,
    now: Instant,
    wall: SystemTime,
) -> Result<(), Refusal> {
    let day = utc_day_at(wall);
    if day != c.day {
        c.day = day;
        c.today = 0;
    }
    if spec.daily > 0 && c.today >= spec.daily {
        return Err(Refusal::QuotaExceeded {
            retry_after: seconds_to_midnight(wall),
        });
    }
    let per_second = f64::from(spec.per_minute) / 60.0;
    let capacity = f64::from(spec.burst.max(1));
    let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
    c.tokens = (c.tokens + elapsed * per_second).min(capacity);
    c.refilled = now;
    if c.tokens < 1.0 {
        let wait = if per_second > 0.0 {
            (1.0 - c.tokens) / per_second
        } else {
            60.0
        };
        return Err(Refusal::RateLimited {
            retry_after: (wait.ceil() as u64).max(1),
        });
    }
    c.tokens -= 1.0;
    c.today += 1;
    Ok(())
}

fn utc_day() -> u64 {
    utc_day_at(SystemTime::now())
}

fn utc_day_at(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

fn seconds_to_midnight(t: SystemTime) -> u64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    86_400 - secs % 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(tokens: f64, now: Instant) -> ProjectCounters {
        ProjectCounters {
            tokens,
            refilled: now,
            day: utc_day(),
            today: 0,
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let spec = RateSpec {
            per_minute: 60,
            burst: 3,
            daily: 0,
        };
        let start = Instant::now();
        let wall = SystemTime::now();
        let mut c = counters(3.0, start);
        for _ in 0..3 {
            assert_eq!(check(&mut c, spec, start, wall), Ok(()));
        }
        assert_eq!(
            check(&mut c, spec, start, wall),
            Err(Refusal::RateLimited { retry_after: 1 })
        );
        // One per second comes back.
        assert_eq!(
            check(&mut c, spec, start + Duration::from_millis(1000), wall),
            Ok(())
        );
        assert!(check(&mut c, spec, start + Duration::from_millis(1500), wall).is_err());
        // Idle time refills no more than the burst.
        let later = start + Duration::from_secs(600);
        for _ in 0..3 {
            assert_eq!(check(&mut c, spec, later, wall), Ok(()));
        }
        assert!(check(&mut c, spec, later, wall).is_err());
    }

    #[test]
    fn daily_quota_resets_at_utc_midnight() {
        let spec = RateSpec {
            per_minute: 6000,
            burst: 100,
            daily: 2,
        };
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(86_400 * 100 + 86_000);
        let mut c = counters(100.0, now);
        c.day = utc_day_at(wall);
        assert_eq!(check(&mut c, spec, now, wall), Ok(()));
        assert_eq!(check(&mut c, spec, now, wall), Ok(()));
        assert_eq!(
            check(&mut c, spec, now, wall),
            Err(Refusal::QuotaExceeded { retry_after: 400 })
        );
        let tomorrow = wall + Duration::from_secs(400);
        assert_eq!(check(&mut c, spec, now, tomorrow), Ok(()));
    }

    #[tokio::test]
    async fn projects_have_their_own_counters() {
        let limiter = LocalLimiter::default();
        let spec = RateSpec {
            per_minute: 1,
            burst: 1,
            daily: 0,
        };
        let a = ProjectId::new("a").unwrap();
        let b = ProjectId::new("b").unwrap();
        assert!(limiter.admit(&a, spec).await.is_ok());
        assert!(limiter.admit(&a, spec).await.is_err());
        assert!(limiter.admit(&b, spec).await.is_ok());
        // A deleted project's id starts afresh.
        limiter.forget(&a).await;
        assert!(limiter.admit(&a, spec).await.is_ok());
        assert!(limiter.admit(&b, spec).await.is_err());
    }
}
