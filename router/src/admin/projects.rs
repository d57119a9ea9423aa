//! Projects and their settings: env, limits, suspension, hostnames.
//!
//! A deploy token may read its project and manage its env; creating and
//! deleting projects, limits, suspension and hostnames are the operator's.

use super::{Call, ok, page};
use crate::deploy::manifest::{MAX_ENV_VALUE_BYTES, MAX_ENV_VARS, check_env_name};
use crate::error::{ApiError, Body};
use crate::hostname::Hostname;
use crate::store::{EnvVar, Project, ProjectSettings};
use http::{Response, StatusCode};
use serde::Deserialize;
use switchyard_runtime::ProjectId;

/// What the API shows of a project. Secret env values are never included.
pub(crate) fn view(call: &Call<'_>, project: &Project) -> serde_json::Value {
    serde_json::json!({
        "id": project.id,
        "url": call.node.project_url(project.id.as_str(), call.public_addr),
        "createdAt": project.created_at,
        "suspended": project.suspended,
        "activeBuild": project.active_build,
        "settings": project.settings,
        "env": env_view(&project.env),
    })
}

fn env_view(env: &[EnvVar]) -> Vec<serde_json::Value> {
    env.iter()
        .map(|var| {
            if var.secret {
                serde_json::json!({ "name": var.name, "secret": true })
            } else {
                serde_json::json!({ "name": var.name, "secret": false, "value": var.value })
            }
        })
        .collect()
}

pub(crate) async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let (cursor, limit) = call.page()?;
    let (items, next) = match &call.principal {
        crate::auth::Principal::Admin => {
            let page = call.node.store.projects(cursor.as_deref(), limit).await?;
            (page.items, page.next)
        }
        // A deploy token sees its own project and nothing else.
        crate::auth::Principal::Project(own) => (
            call.node.store.project(own).await?.into_iter().collect(),
            None,
        ),
    };
    page(items.iter().map(|p| view(&call, p)).collect(), next)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    id: String,
}

pub(crate) async fn create(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let body: CreateProject = call.json().await?;
    let id = ProjectId::new(&body.id).map_err(|e| ApiError::Invalid {
        code: "INVALID_PROJECT_ID",
        message: e.to_string(),
    })?;
    let node = call.node;
    let _lifecycle = node.project_lifecycle.lock().await;
    if node.store.project(&id).await?.is_none() {
        // A project deleted earlier under this id may have left kv data or
        // a database behind (its purge failed, or its last requests wrote
        // after it).
        node.runtime.forget_project(&id).await.map_err(|e| {
            ApiError::Unavailable(format!("clearing the data of an earlier {id}: {e}"))
        })?;
    }
    let project = node.store.create_project(&id).await?;
    ok(StatusCode::CREATED, view(&call, &project))
}

pub(crate) async fn get(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let project = super::existing_project(call.node, &id).await?;
    ok(StatusCode::OK, view(&call, &project))
}

pub(crate) async fn delete(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    let node = call.node;
    let _lifecycle = node.project_lifecycle.lock().await;
    if !node.store.delete_project(&id).await? {
        return Err(ApiError::NotFound("project"));
    }
    // Stop routing to it now, not when the change notice arrives.
    node.routes.invalidate_project(&id);
    node.limiter.forget(&id).await;
    // Its kv data, database and log go too; if a backend fails now,
    // creating a project with this id clears them first.
    if let Err(e) = node.runtime.forget_project(&id).await {
        tracing::warn!(project = %id, error = %e, "could not clear a deleted project's data");
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": id, "deleted": true }),
    )
}

pub(crate) async fn get_env(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let project = super::existing_project(call.node, &id).await?;
    ok(
        StatusCode::OK,
        serde_json::Value::Array(env_view(&project.env)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetEnv {
    vars: Vec<EnvInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvInput {
    name: String,
    value: String,
    #[serde(default)]
    secret: bool,
}

pub(crate) async fn set_env(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let node = call.node;
    let existing = super::existing_project(node, &id).await?.env;
    let body: SetEnv = call.json().await?;
    for var in &body.vars {
        check_env_name(&var.name)?;
        if var.value.len() > MAX_ENV_VALUE_BYTES {
            return Err(ApiError::Invalid {
                code: "INVALID_ENV_VALUE",
                message: format!(
                    "{}: value longer than {MAX_ENV_VALUE_BYTES} bytes",
                    var.name
                ),
            });
        }
    }
    let new_names = body
        .vars
        .iter()
        .filter(|v| !existing.iter().any(|e| e.name == v.name))
        .count();
    if existing.len() + new_names > MAX_ENV_VARS {
        return Err(ApiError::Invalid {
            code: "TOO_MANY_ENV_VARS",
            message: format!("a project may have at most {MAX_ENV_VARS} variables"),
        });
    }
    let vars: Vec<EnvVar> = body
        .vars
        .into_iter()
        .map(|v| EnvVar {
            name: v.name,
            value: v.value,
            secret: v.secret,
        })
        .collect();
    node.store.set_env(&id, &vars).await?;
    let env = super::existing_project(node, &id).await?.env;
    ok(StatusCode::OK, serde_json::Value::Array(env_view(&env)))
}

pub(crate) async fn unset_env(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    if !call.node.store.unset_env(&id, &call.params[1]).await? {
        return Err(ApiError::NotFound("variable"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "name": call.params[1], "deleted": true }),
    )
}

pub(crate) async fn get_limits(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let project = super::existing_project(call.node, &id).await?;
    let effective = call.node.routes.project_limits(&project);
    let tenants = &call.node.config.tenants;
    ok(
        StatusCode::OK,
        serde_json::json!({
            "settings": project.settings,
            "effective": {
                "sandbox": effective,
                "requestsPerMinute": project.settings.requests_per_minute.unwrap_or(tenants.requests_per_minute),
                "burst": project.settings.burst.unwrap_or(tenants.burst),
                "dailyRequests": project.settings.daily_requests.unwrap_or(tenants.daily_requests),
            },
        }),
    )
}

pub(crate) async fn set_limits(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    let node = call.node;
    let settings: ProjectSettings = call.json().await?;
    let invalid = |message: String| ApiError::Invalid {
        code: "INVALID_LIMITS",
        message,
    };
    node.config
        .runtime
        .limits
        .with_overrides(&settings.sandbox)
        .validate(&node.config.runtime.pool)
        .map_err(|e| invalid(e.to_string()))?;
    if settings.requests_per_minute == Some(0) {
        return Err(invalid("requests_per_minute must be at least 1".into()));
    }
    crate::gateway::cors::check_origins(&settings.cors_origins).map_err(invalid)?;
    node.store.set_settings(&id, &settings).await?;
    ok(StatusCode::OK, serde_json::json!({ "settings": settings }))
}

pub(crate) async fn suspend(call: Call<'_>, suspended: bool) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    call.node.store.set_suspended(&id, suspended).await?;
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": id, "suspended": suspended }),
    )
}

pub(crate) async fn hostnames(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    super::existing_project(call.node, &id).await?;
    let records = call.node.store.hostnames(&id).await?;
    let items = records
        .iter()
        .map(|r| serde_json::json!({ "hostname": r.hostname, "createdAt": r.created_at }))
        .collect();
    ok(StatusCode::OK, serde_json::Value::Array(items))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHostname {
    hostname: String,
}

pub(crate) async fn add_hostname(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    let node = call.node;
    let body: AddHostname = call.json().await?;
    let hostname = Hostname::parse(&body.hostname).map_err(|e| ApiError::Invalid {
        code: "INVALID_HOSTNAME",
        message: e.to_string(),
    })?;
    if hostname.is_within(&node.config.base_domain) {
        return Err(ApiError::Invalid {
            code: "INVALID_HOSTNAME",
            message: format!(
                "`{hostname}` is under the base domain `{}`, where projects get `<project>.{}` already",
                node.config.base_domain, node.config.base_domain
            ),
        });
    }
    let record = node.store.add_hostname(&id, &hostname).await?;
    ok(
        StatusCode::CREATED,
        serde_json::json!({ "hostname": record.hostname, "project": id, "createdAt": record.created_at }),
    )
}

pub(crate) async fn remove_hostname(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    let hostname = Hostname::parse(&call.params[1]).map_err(|_| ApiError::NotFound("hostname"))?;
    if !call.node.store.remove_hostname(&id, &hostname).await? {
        return Err(ApiError::NotFound("hostname"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "hostname": hostname, "deleted": true }),
    )
}
