// Test fixture: a Switchyard app in JavaScript, built with componentize-js
// (StarlingMonkey). Such components import wasi:filesystem and wasi:sockets;
// Switchyard must load and run them. Answers every request with the path and
// a kv counter.

import { increment } from 'switchyard:gateway/kv@0.1.0';
import { Fields, OutgoingResponse, OutgoingBody, ResponseOutparam } from 'wasi:http/types@0.2.12';

const encoder = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() ?? '/';
    const visits = increment('visits', 1n);
    const headers = Fields.fromList([['content-type', encoder.encode('text/plain')]]);
    const response = new OutgoingResponse(headers);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(encoder.encode(`javascript saw ${path}; visits=${visits}\n`));
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
