"""Test fixture: a Switchyard app in Python, built with componentize-py.

componentize-py components import wasi:filesystem (and more of wasi:cli than
Rust's std does); Switchyard must load and run them. Answers every request
with the path, a kv counter, and whether reading a host file worked.
"""

from wit_world import exports
from wit_world.imports import kv
from wit_world.imports.types import (
    IncomingRequest, ResponseOutparam, OutgoingResponse, Fields, OutgoingBody,
)
from componentize_py_types import Ok


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        visits = kv.increment("visits", 1)
        try:
            open("/etc/passwd").read()
            files = "allowed"
        except OSError:
            files = "refused"
        body = f"python saw {path}; visits={visits}; files={files}\n".encode()
        headers = Fields.from_list([("content-type", b"text/plain")])
        response = OutgoingResponse(headers)
        out = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with out.write() as stream:
            stream.blocking_write_and_flush(body)
        OutgoingBody.finish(out, None)
