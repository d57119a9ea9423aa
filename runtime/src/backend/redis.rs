//! A Redis connection shared by async callers (the Redis kv backend and the
//! router's control store and rate limiter use it): one multiplexed
//! connection that reconnects by itself, and a deadline on every call, so a
//! Redis that is down or stalled costs a caller at most the timeout, never a
//! hang.
//!
//! Errors carry Redis's own text for the operator; callers map them to
//! what their users may see. The URL is never part of a message: it may
//! hold a password.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{
    Client, FromRedisValue, IntoConnectionInfo, ProtocolVersion, ScriptInvocation, ToRedisArgs,
};
use std::time::Duration;

/// How long sent data may go unacknowledged before the connection is
/// taken for broken (at least the call timeout).
const BROKEN_AFTER: Duration = Duration::from_secs(10);

/// Why a Redis call failed, for the operator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisFailure {
    /// No reply within the deadline (Redis down, stalled or unreachable).
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis or the connection failed.
    #[error("redis: {0}")]
    Failed(String),
}

impl From<redis::RedisError> for RedisFailure {
    fn from(e: redis::RedisError) -> Self {
        RedisFailure::Failed(e.to_string())
    }
}

/// A Redis URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid redis URL: {0}")]
pub struct InvalidRedisUrl(String);

/// One Redis server, used from async code. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisConn {
    manager: ConnectionManager,
    timeout: Duration,
}

impl RedisConn {
    /// A connection to `url` (`redis://[user:password@]host[:port][/db]`),
    /// made on first use and remade whenever it breaks; every call gives up
    /// after `timeout`. `push`, if given, receives pub/sub messages (the
    /// connection then speaks RESP3 and resubscribes after reconnecting).
    pub fn open(
        url: &str,
        timeout: Duration,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<RedisConn, InvalidRedisUrl> {
        // The URL may hold a password: its parser's message may quote it.
        let invalid =
            || InvalidRedisUrl("expected redis://[user:password@]host[:port][/db]".into());
        if !url.starts_with("redis://") {
            return Err(invalid());
        }
        let info = url.into_connection_info().map_err(|_| invalid())?;
        // A Redis that vanished (no FIN, no RST) must break the connection
        // so the manager remakes it; a call's own deadline does not. The
        // kernel ends it after unacknowledged data or unanswered probes.
        let mut info = info.set_tcp_settings(
            TcpSettings::default()
                .set_nodelay(true)
                .set_keepalive(
                    TcpKeepalive::new()
                        .with_time(Duration::from_secs(15))
                        .with_interval(Duration::from_secs(5))
                        .with_retries(3),
                )
                .set_user_timeout(BROKEN_AFTER.max(timeout)),
        );
        if push.is_some() {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(|e| InvalidRedisUrl(e.to_string()))?;
        let mut config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        if let Some(push) = push {
            config = config.set_push_sender(push).set_automatic_resubscription();
        }
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| InvalidRedisUrl(e.to_string()))?;
        Ok(RedisConn { manager, timeout })
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisFailure> {
        let mut conn = self.manager.clone();
        self.deadline(cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline (with `atomic()`, a MULTI/EXEC transaction).
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisFailure> {
        let mut conn = self.manager.clone();
        self.deadline(pipe.query_async(&mut conn)).await
    }

    /// Runs a Lua script (EVALSHA, loading it first if the server lost it,
    /// as after a restart).
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        let mut conn = self.manager.clone();
        self.deadline(invocation.invoke_async(&mut conn)).await
    }

    /// Subscribes to a channel; with automatic resubscription it stays
    /// subscribed across reconnects.
    pub async fn subscribe(&self, channel: impl ToRedisArgs) -> Result<(), RedisFailure> {
        let mut conn = self.manager.clone();
        self.deadline(conn.subscribe(channel)).await
    }

    async fn deadline<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        }
    }
}
