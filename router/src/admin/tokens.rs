//! Project-scoped deploy tokens: the operator's to manage. A token is shown
//! once, when created; only its hash is kept.

use super::{Call, ok};
use crate::auth::new_deploy_token;
use crate::error::{ApiError, Body};
use http::{Response, StatusCode};
use serde::Deserialize;

pub(crate) async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    super::existing_project(call.node, &id).await?;
    let items = call
        .node
        .store
        .tokens(&id)
        .await?
        .iter()
        .map(|t| serde_json::json!({ "id": t.id, "name": t.name, "createdAt": t.created_at }))
        .collect();
    ok(StatusCode::OK, serde_json::Value::Array(items))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
}

pub(crate) async fn create(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    let body: CreateToken = call.json().await?;
    if body.name.is_empty() || body.name.len() > 100 || body.name.chars().any(char::is_control) {
        return Err(ApiError::Invalid {
            code: "INVALID_TOKEN_NAME",
            message: "a token name is 1 to 100 printable characters".into(),
        });
    }
    let (token, record) = new_deploy_token(&id, &body.name);
    call.node.store.create_token(&record).await?;
    ok(
        StatusCode::CREATED,
        serde_json::json!({
            "id": record.id,
            "name": record.name,
            "createdAt": record.created_at,
            "token": token,
        }),
    )
}

pub(crate) async fn revoke(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    call.principal.require_admin()?;
    let id = call.project(0)?;
    if !call.node.store.revoke_token(&id, &call.params[1]).await? {
        return Err(ApiError::NotFound("token"));
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": call.params[1], "revoked": true }),
    )
}
