//! A plain `wasi:http/proxy` component, as any wasi:http toolchain would
//! produce: upstream `wasip2` bindings, no Switchyard SDK, no Switchyard
//! imports. Switchyard must run it unmodified.
//!
//! Answers every request with `plain proxy saw <path>`.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Plain;

impl wasip2::exports::http::incoming_handler::Guest for Plain {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("stream taken once");
        stream
            .blocking_write_and_flush(format!("plain proxy saw {path}\n").as_bytes())
            .expect("client connected");
        drop(stream);
        OutgoingBody::finish(body, None).expect("body complete");
    }
}

wasip2::http::proxy::export!(Plain);
