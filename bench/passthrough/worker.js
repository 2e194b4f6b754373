// The floor every gateway figure in `make bench` is compared with: a bare pass-through
// worker in the same local workerd (`wrangler dev --local`) as Tollbooth. It forwards
// the request to UPSTREAM (method, path, headers, body) and streams the answer back.
// No auth, no metering, no parsing: whatever a gateway adds on top of this is its own.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(env.UPSTREAM + url.pathname + url.search, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
  },
};
