//! Deployments: upload a bundle, list and read builds, roll back.

use super::{Call, ok, page};
use crate::build::BuildRecord;
use crate::error::{ApiError, Body};
use crate::store::StoreError;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use switchyard_runtime::BuildId;

fn view(call: &Call<'_>, build: &BuildRecord, active: Option<&BuildId>) -> serde_json::Value {
    serde_json::json!({
        "id": build.id,
        "project": build.project,
        "createdAt": build.created_at,
        "component": build.component,
        "assets": build.manifest.assets.len(),
        "assetBytes": build.manifest.asset_bytes(),
        "active": Some(&build.id) == active,
        "url": call.node.project_url(build.project.as_str(), call.public_addr),
    })
}

/// `POST …/deployments`: the body is the bundle (tar, optionally gzipped).
pub(crate) async fn deploy(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let body = call.take_body()?;
    let max = call.node.config.admin.max_upload_bytes;
    if http_body::Body::size_hint(&body).lower() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the bundle is larger than the limit of {max} bytes"
        )));
    }
    let build = call.node.deployer.deploy(&id, body).await?;
    tracing::info!(project = %id, build = %build.id, "deployed");
    ok(StatusCode::CREATED, view(&call, &build, Some(&build.id)))
}

pub(crate) async fn list(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let (cursor, limit) = call.page()?;
    let project = super::existing_project(call.node, &id).await?;
    let builds = call
        .node
        .store
        .builds(&id, cursor.as_deref(), limit)
        .await
        .map_err(|e| match e {
            // The only thing a listing does not find is its cursor.
            StoreError::NotFound => ApiError::BadRequest("invalid cursor".into()),
            other => other.into(),
        })?;
    let items = builds
        .items
        .iter()
        .map(|b| view(&call, b, project.active_build.as_ref()))
        .collect();
    page(items, builds.next)
}

pub(crate) async fn get(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let build_id = BuildId::new(&call.params[1]).map_err(|_| ApiError::NotFound("build"))?;
    let project = super::existing_project(call.node, &id).await?;
    let build = call
        .node
        .store
        .build(&id, &build_id)
        .await?
        .ok_or(ApiError::NotFound("build"))?;
    ok(
        StatusCode::OK,
        view(&call, &build, project.active_build.as_ref()),
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rollback {
    build: Option<String>,
}

/// `POST …/rollback`: to `{"build": id}`, or (empty body) to the build
/// before the active one.
pub(crate) async fn rollback(mut call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    let body = http_body_util::Limited::new(call.take_body()?, 4096)
        .collect()
        .await
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
        .to_bytes();
    let request: Rollback = if body.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid {
            code: "INVALID_JSON",
            message: format!("invalid request body: {e}"),
        })?
    };
    let target = request
        .build
        .map(|b| BuildId::new(&b).map_err(|_| ApiError::NotFound("build")))
        .transpose()?;
    let build = call.node.deployer.rollback(&id, target.as_ref()).await?;
    tracing::info!(project = %id, build = %build.id, "rolled back");
    ok(StatusCode::OK, view(&call, &build, Some(&build.id)))
}
