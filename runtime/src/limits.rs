//! What one request of a project may consume, and the store limiter that
//! enforces the memory part of it.
//!
//! [`Limits`] holds the global defaults (from [`crate::RuntimeConfig`]); a
//! project may override any field with [`LimitsOverride`], within the ceilings
//! that the engine's pooling allocator was sized for.

use crate::config::PoolConfig;
use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// Declares [`Limits`] and [`LimitsOverride`] from one field list, so the two
/// can never drift apart.
macro_rules! limits {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident : $ty:ty = $default:expr, range $min:expr => $max:expr;
    )*) => {
        /// The limits every request of a project runs under.
        ///
        /// Defaults are Switchyard's; an operator sets global defaults in the
        /// runtime config and per-project overrides with [`LimitsOverride`].
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Limits {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for Limits {
            fn default() -> Self {
                Limits { $( $field: $default, )* }
            }
        }

        /// Per-project changes to [`Limits`]: each field that is set replaces
        /// the default.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct LimitsOverride {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl Limits {
            /// These limits with every field that `overrides` sets replaced.
            pub fn with_overrides(&self, overrides: &LimitsOverride) -> Limits {
                Limits { $( $field: overrides.$field.unwrap_or(self.$field), )* }
            }

            /// These limits, tightened to whatever `asked` sets lower: a
            /// build may ask for less than its project allows, never more.
            pub fn tightened_by(&self, asked: &LimitsOverride) -> Limits {
                Limits { $( $field: asked.$field.map_or(self.$field, |v| v.min(self.$field)), )* }
            }

            /// The first field `asked` sets above these limits, with both
            /// values.
            pub fn first_exceeded_by(&self, asked: &LimitsOverride) -> Option<(&'static str, u64, u64)> {
                $(
                    if let Some(v) = asked.$field {
                        if v > self.$field {
                            return Some((stringify!($field), u64::from(v), u64::from(self.$field)));
                        }
                    }
                )*
                None
            }

            /// Every field set explicitly.
            pub fn to_override(&self) -> LimitsOverride {
                LimitsOverride { $( $field: Some(self.$field), )* }
            }

            /// Checks every field against its allowed range; the upper bounds
            /// of memory and tables come from the engine's `pool`.
            pub fn validate(&self, pool: &PoolConfig) -> Result<(), LimitsError> {
                $(
                    let (min, max): (u64, u64) = ($min, ($max)(pool));
                    let value = u64::from(self.$field);
                    if !(min..=max).contains(&value) {
                        return Err(LimitsError {
                            field: stringify!($field),
                            value,
                            min,
                            max,
                        });
                    }
                )*
                self.validate_relations()
            }
        }
    };
}

impl Limits {
    /// Checks limits that depend on each other.
    fn validate_relations(&self) -> Result<(), LimitsError> {
        let largest_kv_call = u64::from(self.kv_key_bytes) + 2 * self.kv_value_bytes;
        if self.hostcall_bytes < largest_kv_call {
            return Err(LimitsError {
                field: "hostcall_bytes",
                value: self.hostcall_bytes,
                min: largest_kv_call,
                max: 1024 * MIB,
            });
        }
        Ok(())
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn fixed(max: u64) -> impl Fn(&PoolConfig) -> u64 {
    move |_| max
}

limits! {
    /// Wall-clock deadline for one request, instantiation included, in
    /// milliseconds. Default 10 s.
    wall_clock_ms: u64 = 10_000, range 1 => fixed(3_600_000);
    /// CPU budget: fuel (roughly, WebAssembly instructions) one request may
    /// use. Default 2·10⁹, about one to three seconds of CPU.
    fuel: u64 = 2_000_000_000, range 1 => fixed(u64::MAX);
    /// Linear memory one request may use, in bytes, counted across all of
    /// the component's memories. Default 128 MiB.
    memory_bytes: u64 = 128 * MIB, range 64 * KIB => |p: &PoolConfig| p.max_memory_bytes;
    /// Table elements one request may use, across all tables. Default 100 000.
    table_elements: u64 = 100_000, range 1 => |p: &PoolConfig| p.table_elements;
    /// Requests of one deployed build that may run at once; beyond it a
    /// request is refused with `CAPACITY` instead of taking another pool
    /// slot, so one tenant cannot occupy the whole node. Default 100.
    concurrency: u32 = 100, range 1 => fixed(100_000);
    /// Core module instances one request may create. Default 64.
    instances: u32 = 64, range 1 => |p: &PoolConfig| u64::from(p.max_core_instances_per_component);
    /// Host resources (streams, requests, header sets, …) a request may hold
    /// at once. Each can hold host memory (a buffered body chunk, a header
    /// set), so this also bounds what a request costs the host beyond its
    /// linear memory: roughly `resource_handles × http_field_bytes`.
    /// Default 1024.
    resource_handles: u32 = 1024, range 16 => fixed(1_000_000);
    /// Bytes a guest may hand the host in one call. Must cover the largest kv
    /// call (`kv_key_bytes + 2 × kv_value_bytes`, for compare-and-swap), so
    /// kv calls fail with error values, never traps. Default 8 MiB.
    hostcall_bytes: u64 = 8 * MIB, range KIB => fixed(1024 * MIB);
    /// In-memory size of one header (or trailer) set a guest builds, in
    /// bytes. Default 64 KiB.
    http_field_bytes: u64 = 64 * KIB, range KIB => fixed(16 * MIB);
    /// Request body bytes a guest may receive. Default 5 MB.
    request_body_bytes: u64 = 5_000_000, range 0 => fixed(u64::MAX);
    /// Response body bytes a guest may send. Default 5 MB.
    response_body_bytes: u64 = 5_000_000, range 0 => fixed(u64::MAX);
    /// kv calls one request may make. Default 1000.
    kv_calls: u32 = 1000, range 0 => fixed(1_000_000);
    /// Longest kv key, in bytes. Default 512.
    kv_key_bytes: u32 = 512, range 1 => fixed(64 * KIB);
    /// Largest kv value, in bytes. Default 1 MiB.
    kv_value_bytes: u64 = MIB, range 1 => fixed(512 * MIB);
    /// kv storage a project may hold (keys plus values), in bytes. Default
    /// 100 MiB.
    kv_quota_bytes: u64 = 100 * MIB, range 0 => fixed(u64::MAX);
    /// Gateway database calls (a query or a batch) one request may make.
    /// Default 1000.
    db_calls: u32 = 1000, range 0 => fixed(1_000_000);
    /// Longest a database call may take, waiting for the database
    /// included, in milliseconds; a statement still running then is
    /// cancelled and the call rolled back (`QUERY_TIMEOUT`). Default 2000.
    db_timeout_ms: u64 = 2000, range 1 => fixed(600_000);
    /// Size the project's database may reach, in bytes; writes beyond it
    /// fail with `QUOTA_EXCEEDED`. Default 100 MiB.
    db_quota_bytes: u64 = 100 * MIB, range 64 * KIB => fixed(u64::MAX);
    /// Bytes of values one database call may return (text and blobs by
    /// length, other values 8 bytes each): results are copied into the
    /// guest's memory. Default 4 MiB.
    db_result_bytes: u64 = 4 * MIB, range KIB => fixed(1024 * MIB);
    /// Outgoing HTTP requests one request may make, refused ones included
    /// (only origins in the build's egress allowlist are ever reached).
    /// Default 16.
    subrequests: u32 = 16, range 0 => fixed(1000);
}

/// A limit set outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{field}` must be between {min} and {max}, got {value}")]
pub struct LimitsError {
    /// The field's name.
    pub field: &'static str,
    /// The value given.
    pub value: u64,
    /// Smallest allowed value.
    pub min: u64,
    /// Largest allowed value.
    pub max: u64,
}

/// Which store limit a guest ran into, kept so a trap that follows (an
/// allocator aborting, say) is reported as the limit it really is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory,
    Table,
}

/// The store's [`ResourceLimiter`]: counts memory across all of an instance's
/// memories (the pooling allocator only caps each memory on its own) and
/// table elements across all tables.
///
/// Budget is only ever taken, never given back: a growth that fails after
/// being granted here stays counted, which errs on the side of refusing.
pub(crate) struct GuestLimiter {
    memory_limit: usize,
    memory_used: usize,
    table_limit: usize,
    tables_used: usize,
    instances: usize,
    pub(crate) hit: Option<LimitHit>,
}

impl GuestLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        GuestLimiter {
            memory_limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            memory_used: 0,
            table_limit: usize::try_from(limits.table_elements).unwrap_or(usize::MAX),
            tables_used: 0,
            instances: limits.instances as usize,
            hit: None,
        }
    }

    /// Takes `desired - current` from the budget if it fits and the growth
    /// stays within the memory's or table's own `maximum`.
    fn grant(
        used: &mut usize,
        limit: usize,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> bool {
        let within_maximum = maximum.is_none_or(|max| desired <= max);
        let grow = desired.saturating_sub(current);
        match used.checked_add(grow).filter(|total| *total <= limit) {
            Some(total) if within_maximum => {
                *used = total;
                true
            }
            _ => false,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = Self::grant(
            &mut self.memory_used,
            self.memory_limit,
            current,
            desired,
            maximum,
        );
        if !granted {
            self.hit = Some(LimitHit::Memory);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = Some(LimitHit::Memory);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = Self::grant(
            &mut self.tables_used,
            self.table_limit,
            current,
            desired,
            maximum,
        );
        if !granted {
            self.hit = Some(LimitHit::Table);
        }
        Ok(granted)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = Some(LimitHit::Table);
        Ok(())
    }

    fn instances(&self) -> usize {
        self.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = Limits::default();
        let over = LimitsOverride {
            wall_clock_ms: Some(500),
            kv_calls: Some(3),
            ..Default::default()
        };
        let merged = base.with_overrides(&over);
        assert_eq!(merged.wall_clock_ms, 500);
        assert_eq!(merged.kv_calls, 3);
        assert_eq!(merged.memory_bytes, base.memory_bytes);
    }

    #[test]
    fn builds_may_only_tighten_limits() {
        let project = Limits::default();
        let asked = LimitsOverride {
            wall_clock_ms: Some(500),
            fuel: Some(u64::MAX),
            ..Default::default()
        };
        let effective = project.tightened_by(&asked);
        assert_eq!(effective.wall_clock_ms, 500);
        assert_eq!(
            effective.fuel, project.fuel,
            "asking for more changes nothing"
        );
        assert_eq!(
            project.first_exceeded_by(&asked),
            Some(("fuel", u64::MAX, project.fuel))
        );
        assert_eq!(project.first_exceeded_by(&LimitsOverride::default()), None);
        assert_eq!(
            Limits::default().with_overrides(&project.to_override()),
            project
        );
    }

    #[test]
    fn validation_uses_pool_ceilings() {
        let pool = PoolConfig::default();
        assert_eq!(Limits::default().validate(&pool), Ok(()));
        let too_much = Limits {
            memory_bytes: pool.max_memory_bytes + 1,
            ..Limits::default()
        };
        let err = too_much.validate(&pool).unwrap_err();
        assert_eq!(err.field, "memory_bytes");
        assert_eq!(err.max, pool.max_memory_bytes);
        let zero = Limits {
            wall_clock_ms: 0,
            ..Limits::default()
        };
        assert_eq!(zero.validate(&pool).unwrap_err().field, "wall_clock_ms");
    }

    #[test]
    fn limits_parse_from_partial_toml_like_json_and_reject_unknown_keys() {
        let parsed: LimitsOverride = serde_json::from_str(r#"{"fuel": 5}"#).unwrap();
        assert_eq!(parsed.fuel, Some(5));
        assert!(serde_json::from_str::<LimitsOverride>(r#"{"fuell": 5}"#).is_err());
        let limits: Limits = serde_json::from_str(r#"{"kv_calls": 7}"#).unwrap();
        assert_eq!(limits.kv_calls, 7);
        assert_eq!(limits.fuel, Limits::default().fuel);
    }

    #[test]
    fn memory_is_counted_across_all_memories() {
        let mut limiter = GuestLimiter::new(&Limits {
            memory_bytes: 100,
            ..Limits::default()
        });
        // Two memories created with 40 bytes each, then each tries to grow.
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(40, 60, None).unwrap());
        assert_eq!(limiter.hit, None);
        assert!(!limiter.memory_growing(40, 60, None).unwrap());
        assert_eq!(limiter.hit, Some(LimitHit::Memory));
    }

    #[test]
    fn growth_past_the_memorys_own_maximum_is_refused_without_cost() {
        let mut limiter = GuestLimiter::new(&Limits {
            memory_bytes: 100,
            ..Limits::default()
        });
        assert!(!limiter.memory_growing(0, 80, Some(60)).unwrap());
        assert_eq!(limiter.hit, Some(LimitHit::Memory));
        assert!(limiter.memory_growing(0, 60, Some(60)).unwrap());
        // A failure after a grant keeps the budget taken (fail closed).
        limiter
            .memory_grow_failed(wasmtime::format_err!("os refused"))
            .unwrap();
        assert!(!limiter.memory_growing(0, 50, None).unwrap());
    }

    #[test]
    fn hostcall_bytes_must_cover_the_largest_kv_call() {
        let pool = PoolConfig::default();
        let limits = Limits {
            kv_value_bytes: 8 * MIB,
            ..Limits::default()
        };
        let err = limits.validate(&pool).unwrap_err();
        assert_eq!(err.field, "hostcall_bytes");
        assert_eq!(err.min, 512 + 16 * MIB);
    }

    #[test]
    fn tables_are_counted_across_all_tables() {
        let mut limiter = GuestLimiter::new(&Limits {
            table_elements: 10,
            ..Limits::default()
        });
        assert!(limiter.table_growing(0, 6, None).unwrap());
        assert!(!limiter.table_growing(0, 6, None).unwrap());
        assert_eq!(limiter.hit, Some(LimitHit::Table));
    }
}
