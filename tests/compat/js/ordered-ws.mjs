// The `ws` WebSocket to hand centrifuge-js in Node, so that it sees publications in order.
//
// centrifuge-js 5.7.4 chains each received frame's dispatch on `_dispatchPromise`, but a frame
// that arrives before the previous frame's dispatch has started chains on the old promise
// and is dispatched alongside it: with frame A = [pub 1, pub 2] and frame B = [pub 3] in one
// TCP read, the SDK emits 1, 3, 2. Browsers deliver each WebSocket message in a task of its
// own, so the chain holds there; `ws` (8.17 and later) emits every message of one read in the
// same tick unless `allowSynchronousEvents` is false. The server sends in order (one writer
// per connection); this restores the browser's one-message-per-task delivery.
import WebSocket from 'ws';

export class OrderedWebSocket extends WebSocket {
  constructor(url, protocols, options = {}) {
    super(url, protocols, { ...options, allowSynchronousEvents: false });
  }
}
