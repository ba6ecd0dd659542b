// The pages' one GraphQL client: operations by name from operations.graphql (the file the
// server's persisted-query allowlist is made from), queries and mutations over HTTP, and
// subscriptions over one WebSocket (graphql-transport-ws) that reconnects and resubscribes
// after a server restart. No framework: a page needs only this and the DOM.

const OPERATION_START = /^(?:query|mutation|subscription)\b/gm;

export async function loadOperations(url = "/static/operations.graphql") {
  const text = await (await fetch(url)).text();
  const starts = [...text.matchAll(OPERATION_START)].map((m) => m.index);
  const operations = {};
  starts.forEach((start, i) => {
    const op = text.slice(start, starts[i + 1] ?? text.length).trim();
    operations[op.match(/^\w+\s+(\w+)/)[1]] = op;
  });
  return operations;
}

export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    this.errors = errors;
    this.code = errors[0]?.extensions?.code;
  }
}

export class Api {
  constructor(operations, token) {
    this.operations = operations;
    this.token = token; // a function: the bearer token now, or null
  }

  headers() {
    const token = this.token();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async run(name, variables = {}) {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", ...this.headers() },
      body: JSON.stringify({ query: this.operations[name], variables, operationName: name }),
    });
    const body = await response.json();
    if (body.errors?.length) throw new GraphQLError(body.errors);
    if (!response.ok) throw new Error(body.detail || response.statusText);
    return body.data;
  }

  // Subscribe to `name`; `variables` is a function, asked again on every (re)subscribe so a
  // page can resume from what it has. Returns a function that stops the subscription.
  subscribe(name, variables, onData, onError = console.error) {
    this.live ??= new Live(this);
    return this.live.add({ query: this.operations[name], name, variables, onData, onError });
  }
}

// One WebSocket for every subscription of the page.
class Live {
  constructor(api) {
    this.api = api;
    this.subs = new Map();
    this.next = 1;
    this.retry = 250;
    this.status = document.querySelector("[data-live-status]");
    this.open();
  }

  open() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
    this.socket = new WebSocket(url, "graphql-transport-ws");
    this.ready = false;
    this.socket.onopen = () => {
      this.socket.send(JSON.stringify({ type: "connection_init", payload: this.api.headers() }));
    };
    this.socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.socket.onclose = () => {
      this.ready = false;
      this.show("reconnecting…", false);
      setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 5000);
    };
  }

  show(text, up) {
    if (this.status) {
      this.status.textContent = text;
      this.status.dataset.up = up ? "true" : "false";
    }
  }

  receive(message) {
    if (message.type === "connection_ack") {
      this.ready = true;
      this.retry = 250;
      this.show("live", true);
      for (const [id, sub] of this.subs) this.start(id, sub);
    } else if (message.type === "ping") {
      this.socket.send(JSON.stringify({ type: "pong" }));
    } else if (message.type === "next") {
      const sub = this.subs.get(message.id);
      if (!sub) return;
      if (message.payload.errors) sub.onError(new GraphQLError(message.payload.errors));
      else sub.onData(message.payload.data);
    } else if (message.type === "error") {
      this.subs.get(message.id)?.onError(new GraphQLError(message.payload));
    }
  }

  start(id, sub) {
    this.socket.send(JSON.stringify({
      id, type: "subscribe",
      payload: { query: sub.query, variables: sub.variables(), operationName: sub.name },
    }));
  }

  add(sub) {
    const id = String(this.next++);
    this.subs.set(id, sub);
    if (this.ready) this.start(id, sub);
    return () => {
      this.subs.delete(id);
      if (this.ready) this.socket.send(JSON.stringify({ id, type: "complete" }));
    };
  }
}

// Who is looking: a token from `#token=…` (kept for the tab), and a session id for a shopper
// without one (kept in the browser).
export function tokenFromPage() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("instock.token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return () => sessionStorage.getItem("instock.token");
}

export function sessionId() {
  let id = localStorage.getItem("instock.session");
  if (!id) {
    id = `s-${crypto.randomUUID()}`;
    localStorage.setItem("instock.session", id);
  }
  return id;
}

export function subjectOf(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return null;
  }
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
