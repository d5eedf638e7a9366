// The JSON API, called as any client calls it: relative URLs (the page is /studio, so
// "caption" is /caption), the API key as a Bearer token, and errors in the one shape
// {"error": {"code", "message", ...}} raised as ApiError with the server's message.

const KEY = "ai-director-api-key";
let askKey = null; // set by main.js: shows the key dialog; resolves with a key, or null when cancelled

export function onUnauthorized(ask) {
  askKey = ask;
}

export const storedKey = () => sessionStorage.getItem(KEY);
export const saveKey = (key) => sessionStorage.setItem(KEY, key);

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.param = error.param;
    this.suggestions = error.suggestions || [];
  }
}

/** fetch, with the key when one is stored; on 401 ask for a key and send again. */
async function send(path, { method = "GET", body, accept } = {}) {
  for (;;) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (accept) headers.Accept = accept;
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status !== 401 || !askKey) return response;
    const entered = await askKey(Boolean(key)); // a key was sent: it was the wrong one
    if (!entered) return response; // cancelled: the caller shows the 401's own message
    saveKey(entered);
  }
}

async function parsed(response) {
  const data = await response.json().catch(() => null); // a proxy's HTML error page is not JSON
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const getJSON = (path) => send(path).then(parsed);
export const postJSON = (path, body) => send(path, { method: "POST", body }).then(parsed);

/** POST with `stream: true`: onDelta(text) per `delta` event; resolves with the `done` body. */
export async function stream(path, body, onDelta) {
  const response = await send(path, { method: "POST", body: { ...body, stream: true }, accept: "text/event-stream" });
  // Refusals (401, 404, 422, 429, 503) come before any event, as plain JSON.
  if (!response.ok || !(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
    return parsed(response);
  }
  for await (const { event, data } of events(response.body)) {
    if (event === "delta") onDelta(JSON.parse(data).text);
    else if (event === "done") return JSON.parse(data);
    else if (event === "error") throw new ApiError(response.status, JSON.parse(data));
  }
  throw new ApiError(0, null); // the connection ended without `done`: the caller says so
}

/** Server-sent events from a response body: {event, data} per event, comments skipped. */
async function* events(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // {stream: true} below: a Thai character split across chunks stays whole
  let buffer = "";
  let event = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    // A chunk ending in "\r" may be half of "\r\n": keep it for the next chunk.
    const cut = !done && buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = (done ? "" : lines.pop()) + buffer.slice(cut);
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event: event || "message", data: data.join("\n") };
        event = "";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
    }
    if (done) return;
  }
}
