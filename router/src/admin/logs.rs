//! A project's captured stdout/stderr (and the host's notes about its
//! requests): read a page, or follow as newline-delimited JSON.

use super::{Call, ok};
use crate::error::{ApiError, Body};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use std::sync::Arc;
use std::time::Duration;
use switchyard_runtime::{ProjectId, Runtime};

/// Most records one read returns.
const MAX_RECORDS: usize = 1000;
/// How often a follower checks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// A blank line this often keeps an idle follow stream from timing out.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET …/logs?since=SEQ&limit=N[&follow=true]`.
pub(crate) async fn read(call: Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = call.project(0)?;
    super::existing_project(call.node, &id).await?;
    let since: u64 = match call.query.get("since") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::BadRequest("since must be a sequence number".into()))?,
    };
    let limit = match call.query.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RECORDS).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be between 1 and {MAX_RECORDS}"))
            })?,
    };
    let follow = matches!(
        call.query.get("follow").map(String::as_str),
        Some("" | "true" | "1")
    );
    if follow {
        return Ok(follow_stream(call.node.runtime.clone(), id, since));
    }
    let records = call
        .node
        .runtime
        .logs(&id)
        .map(|l| l.read(since, limit))
        .unwrap_or_default();
    let next = records.last().map_or(since, |r| r.seq + 1);
    ok(
        StatusCode::OK,
        serde_json::json!({ "records": records, "next": next }),
    )
}

/// Streams records from `since` on, as they arrive, until the client leaves.
/// The log is looked up on every poll: it may not exist yet, or be replaced.
fn follow_stream(runtime: Arc<Runtime>, project: ProjectId, since: u64) -> Response<Body> {
    struct Follow {
        runtime: Arc<Runtime>,
        project: ProjectId,
        next: u64,
        quiet: Duration,
    }
    let state = Follow {
        runtime,
        project,
        next: since,
        quiet: Duration::ZERO,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            let log = state.runtime.logs(&state.project);
            let records = log
                .map(|l| l.read(state.next, MAX_RECORDS))
                .unwrap_or_default();
            if let Some(last) = records.last() {
                state.next = last.seq + 1;
                state.quiet = Duration::ZERO;
                let mut chunk = Vec::new();
                for record in &records {
                    if serde_json::to_writer(&mut chunk, record).is_ok() {
                        chunk.push(b'\n');
                    }
                }
                return Some((
                    Ok::<_, crate::error::BoxError>(http_body::Frame::data(Bytes::from(chunk))),
                    state,
                ));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            state.quiet += FOLLOW_POLL;
            if state.quiet >= HEARTBEAT {
                state.quiet = Duration::ZERO;
                return Some((Ok(http_body::Frame::data(Bytes::from_static(b"\n"))), state));
            }
        }
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
