// The REST side of the public protocol (DESIGN.md 4): JSON in and out, the bearer
// token, errors as ApiFailure with the server's {code, message, details}.

export class ApiFailure extends Error {
  constructor(status, error) {
    super(error?.message || `the server answered ${status}`);
    this.status = status;
    this.code = error?.code || "unavailable";
    this.details = error?.details;
  }
}

export class Rest {
  // token: a function returning the current token (or null)
  constructor(token) {
    this.token = token;
  }

  async request(method, path, { body, ifMatch, mutationId } = {}) {
    const headers = { Accept: "application/json" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (ifMatch !== undefined) headers["If-Match"] = `"${ifMatch}"`;
    if (mutationId) headers["X-Mutation-Id"] = mutationId;
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiFailure(0, { code: "unavailable", message: "the server cannot be reached" });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!response.ok) throw new ApiFailure(response.status, data?.error);
    return data;
  }

  get(path) { return this.request("GET", path); }
}

// A query string from the entries whose value is not empty.
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
