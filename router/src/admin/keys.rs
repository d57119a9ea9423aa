//! Project API keys for the database gateway: public keys for browsers,
//! server keys for the project's own servers. A key is shown once, when
//! created; only its hash is kept. A deploy token may manage its own
//! project's keys.

use super::{Call, ok};
use crate::auth::new_api_key;
use crate::error::{ApiError, Body};
use crate::store::KeyKind;
use http::{Response, StatusCode};
use serde::Deserialize;

/// Most keys one project may have.
pub const MAX_KEYS_PER_PROJECT: usize = 100;

pub(crate) async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    super::existing_project(call.node, &id).await?;
    let items = call
        .node
        .store
        .api_keys(&id)
        .await?
        .iter()
        .map(|k| {
            serde_json::json!({
                "id": k.id, "kind": k.kind, "name": k.name, "createdAt": k.created_at,
            })
        })
        .collect();
    ok(StatusCode::OK, serde_json::Value::Array(items))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    kind: KeyKind,
    name: String,
}

pub(crate) async fn create(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let body: CreateKey = call.json().await?;
    if body.name.is_empty() || body.name.len() > 100 || body.name.chars().any(char::is_control) {
        return Err(ApiError::Invalid {
            code: "INVALID_KEY_NAME",
            message: "a key name is 1 to 100 printable characters".into(),
        });
    }
    let store = &call.node.store;
    if store.api_keys(&id).await?.len() >= MAX_KEYS_PER_PROJECT {
        return Err(ApiError::Conflict {
            code: "TOO_MANY_KEYS",
            message: format!("a project has at most {MAX_KEYS_PER_PROJECT} API keys; revoke one"),
        });
    }
    let (key, record) = new_api_key(&id, body.kind, &body.name);
    store.create_api_key(&record).await?;
    ok(
        StatusCode::CREATED,
        serde_json::json!({
            "id": record.id,
            "kind": record.kind,
            "name": record.name,
            "createdAt": record.created_at,
            "key": key,
        }),
    )
}

pub(crate) async fn revoke(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    if !call.node.store.revoke_api_key(&id, &call.params[1]).await? {
        return Err(ApiError::NotFound("key"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": call.params[1], "revoked": true }),
    )
}
