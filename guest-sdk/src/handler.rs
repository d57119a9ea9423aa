//! Glue between `wasi:http/incoming-handler` and an app's handler function.

use crate::request::Request;
use crate::response::{IntoResponse, Response};
use crate::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Reads the request, calls `handler`, and sends what it returns. Called by
/// the code that [`crate::export!`] generates.
pub fn run<F, R>(incoming: IncomingRequest, response_out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request) -> R,
    R: IntoResponse,
{
    let response = match Request::read(incoming) {
        Ok(request) => handler(request).into_response(),
        Err(e) => Response::text(format!("{e}\n")).with_status(400),
    };
    response.send(response_out);
}

impl Response {
    /// Sends this response through a `wasi:http` response slot: headers
    /// first, then the body, then the end of the body. [`crate::export!`]
    /// does this for you; it is public for `export!(raw …)` handlers.
    ///
    /// A `content-length` header is added if there is none. If the client
    /// goes away mid-body, the body is left unfinished so the host knows the
    /// response is incomplete.
    pub fn send(self, response_out: ResponseOutparam) {
        send(self, response_out)
    }
}

fn send(response: Response, response_out: ResponseOutparam) {
    let (status, mut headers, body) = response.into_parts();
    if !headers.iter().any(|(name, _)| name == "content-length") {
        // A known length lets the host skip chunked encoding and check that
        // the body is complete.
        headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let fields = match Fields::from_list(&headers) {
        Ok(fields) => fields,
        // One bad header (a forbidden or malformed name) should not cost the
        // others: add them one by one and report the ones refused.
        Err(_) => {
            let fields = Fields::new();
            for (name, value) in &headers {
                if let Err(e) = fields.append(name, value) {
                    // Goes to the project's log on the host, where the author looks.
                    eprintln!("switchyard-sdk: response header `{name}` dropped: {e:?}");
                }
            }
            fields
        }
    };

    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(status).is_err() {
        eprintln!("switchyard-sdk: invalid status code {status}; sending 500");
        let _ = outgoing.set_status_code(500);
    }
    let Ok(outgoing_body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(outgoing));
    if write_all(&outgoing_body, &body).is_ok() {
        let _ = OutgoingBody::finish(outgoing_body, None);
    }
    // Otherwise the body is dropped unfinished, which tells the host the
    // response is incomplete.
}

/// Most bytes `blocking-write-and-flush` takes in one call.
const SMALL_WRITE: usize = 4096;

/// Writes `bytes` to the body stream as fast as the host accepts them.
pub(crate) fn write_all(body: &OutgoingBody, mut bytes: &[u8]) -> Result<(), ()> {
    let stream = body.write()?;
    if bytes.len() <= SMALL_WRITE {
        // The common case: one host call.
        return stream.blocking_write_and_flush(bytes).map_err(drop);
    }
    while !bytes.is_empty() {
        let permitted = stream.check_write().map_err(drop)?;
        if permitted == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permitted)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        stream.write(&bytes[..n]).map_err(drop)?;
        bytes = &bytes[n..];
    }
    stream.blocking_flush().map_err(drop)
}
