// The REST API with the operator's token (sessionStorage: gone when the tab
// closes), and what the token's role allows.

const TOKEN_KEY = "rackboot.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Who the token is: {name, role}. Servers without roles (no /whoami) have
// one kind of token, which may do everything.
export const session = { name: "", role: "viewer" };

export function canOperate() {
  return session.role === "operator" || session.role === "admin";
}

export function canAdmin() {
  return session.role === "admin";
}

// Sends a request; resolves to {data, headers, status}, throws ApiError with
// the server's message on a non-2xx answer.
export async function call(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok) {
    const message = (data && data.error) || `${res.status} ${res.statusText}`;
    if (res.status === 401) window.dispatchEvent(new CustomEvent("rackboot:signed-out"));
    throw new ApiError(res.status, message);
  }
  return { data, headers: res.headers, status: res.status };
}

export async function get(path, options) {
  return (await call(path, options)).data;
}

export function post(path, body) {
  return call(path, { method: "POST", body });
}

export function put(path, body) {
  return call(path, { method: "PUT", body });
}

export function del(path) {
  return call(path, { method: "DELETE" });
}

// Checks the token and learns its role.
export async function signIn() {
  try {
    const me = await get("/whoami");
    session.name = me.name || "";
    session.role = me.role || "viewer";
  } catch (e) {
    if (e.status !== 404) throw e;
    // No roles on this server: check the token on a read, then it is admin.
    await get("/status");
    session.name = "token";
    session.role = "admin";
  }
  return session;
}

export function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") s.set(k, v);
  }
  const text = s.toString();
  return text ? `?${text}` : "";
}

export function enc(s) {
  return encodeURIComponent(s);
}
