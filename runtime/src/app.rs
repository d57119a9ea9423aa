//! One build of one project, ready to serve requests.

use crate::db::schema::Schema;
use crate::egress::EgressAllowlist;
use crate::ids::{BuildId, ComponentId, ProjectId};
use crate::limits::{Limits, LimitsOverride};
use crate::state::{RequestState, TenantCtx};
use std::sync::Arc;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// What the runtime needs to know to serve one build of a project. Builds
/// are immutable: a changed env or limits means a new build, or a call to
/// [`crate::Runtime::invalidate`].
#[derive(Clone, Debug)]
pub struct AppSpec {
    /// The project; scopes its kv namespace and its logs.
    pub project: ProjectId,
    /// The build of the project.
    pub build: BuildId,
    /// The build's component, compiled beforehand with
    /// [`crate::Runtime::compile`] (on this node or, with a shared artifact
    /// directory, another).
    pub component: ComponentId,
    /// Environment variables, `NAME=value`. Names must match
    /// `[A-Z][A-Z0-9_]{0,63}`; `SWITCHYARD_*` is reserved.
    pub env: Vec<(String, String)>,
    /// Per-project changes to the runtime's default limits.
    pub limits: LimitsOverride,
    /// The tables the build declares: its db queries are checked against
    /// them. Empty for a build without tables.
    pub schema: Arc<Schema>,
    /// The origins the build's guest may send HTTP requests to; empty (the
    /// default) refuses every outgoing request.
    pub egress: Arc<EgressAllowlist>,
}

/// A deployed build: its pre-instantiated component and everything its
/// requests share. Cheap to clone behind an `Arc`; each request instantiates
/// it afresh ([`App::handle`]).
pub struct App {
    pub(crate) tenant: Arc<TenantCtx>,
    pub(crate) pre: ProxyPre<RequestState>,
}

impl App {
    /// The project this app belongs to.
    pub fn project(&self) -> &ProjectId {
        &self.tenant.project
    }

    /// The build this app runs.
    pub fn build(&self) -> &BuildId {
        &self.tenant.build
    }

    /// The limits its requests run under (defaults plus overrides).
    pub fn limits(&self) -> &Limits {
        &self.tenant.limits
    }
}

/// Checks env names and adds the reserved variables.
pub(crate) fn guest_env(spec: &AppSpec) -> Result<Vec<(String, String)>, crate::LoadError> {
    let mut env = Vec::with_capacity(spec.env.len() + 2);
    for (name, value) in &spec.env {
        if !is_env_name(name) || name.starts_with("SWITCHYARD_") {
            return Err(crate::LoadError::InvalidEnv(
                name.chars().take(80).collect(),
            ));
        }
        env.push((name.clone(), value.clone()));
    }
    env.push(("SWITCHYARD_PROJECT".into(), spec.project.to_string()));
    env.push(("SWITCHYARD_BUILD".into(), spec.build.to_string()));
    Ok(env)
}

/// `^[A-Z][A-Z0-9_]{0,63}$`
fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'A'..=b'Z'))
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[(&str, &str)]) -> AppSpec {
        AppSpec {
            project: ProjectId::new("p").unwrap(),
            build: BuildId::new("b1").unwrap(),
            component: ComponentId::of(b""),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limits: LimitsOverride::default(),
            schema: Default::default(),
            egress: Default::default(),
        }
    }

    #[test]
    fn reserved_variables_are_added_last() {
        let env = guest_env(&spec(&[("API_URL", "https://x")])).unwrap();
        assert_eq!(
            env,
            [
                ("API_URL".to_string(), "https://x".to_string()),
                ("SWITCHYARD_PROJECT".to_string(), "p".to_string()),
                ("SWITCHYARD_BUILD".to_string(), "b1".to_string()),
            ]
        );
    }

    #[test]
    fn env_names_are_validated() {
        for ok in ["A", "API_KEY", "X9", &format!("A{}", "B".repeat(63))] {
            assert!(guest_env(&spec(&[(ok, "")])).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "9A",
            "A-B",
            "A B",
            "SWITCHYARD_PROJECT",
            "SWITCHYARD_X",
            &"A".repeat(65),
        ] {
            assert!(guest_env(&spec(&[(bad, "")])).is_err(), "{bad:?}");
        }
    }
}
