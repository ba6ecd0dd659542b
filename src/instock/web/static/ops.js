// The operations console: stock in buckets per location (live), the ledger, reservations and
// orders as they happen, webhook deliveries and dead letters, experiments drawn as bars, and
// the ledger audit. A staff token comes from `#token=…` or the sign-in field.
import { Api, el, loadOperations, subjectOf, tokenFromPage } from "./graphql.js";

const token = tokenFromPage();
const FEED_LENGTH = 50;
let api;

function problem(error) {
  const box = document.getElementById("problem");
  box.hidden = false;
  box.textContent = error.message;
}

function stockRow(sku, item) {
  const b = item.buckets;
  return el("tr", { "data-sku": sku, "data-version": String(item.version ?? "") },
    el("th", { scope: "row" }, sku), el("td", {}, String(item.version ?? "")),
    el("td", { class: "available" }, String(item.available)), el("td", {}, String(b.onHand)),
    el("td", {}, String(b.reserved)), el("td", {}, String(b.committed)),
    el("td", {}, String(b.safetyStock)), el("td", {}, String(b.unsellable)),
    el("td", {}, item.locations.map((l) =>
      `${l.location}: ${l.buckets.available}/${l.buckets.onHand}`).join(" · ")));
}

function putRow(sku, item) {
  const body = document.querySelector("#stock tbody");
  const old = body.querySelector(`tr[data-sku="${CSS.escape(sku)}"]`);
  const row = stockRow(sku, item);
  if (old) old.replaceWith(row);
  else body.append(row);
}

async function stock() {
  const { products } = await api.run("OpsStock");
  const skus = [];
  for (const { node } of products.edges) {
    for (const variant of node.variants) {
      skus.push(variant.sku);
      putRow(variant.sku, { version: variant.stock?.version, ...variant.stock.detail });
    }
  }
  const pending = new Set();
  let timer = null;
  api.subscribe("StockChanged", () => ({ skus: skus.slice(0, 100), channel: null }), (data) => {
    pending.add(data.stockChanged.sku);
    timer ??= setTimeout(async () => { // a burst of changes costs one read per SKU
      timer = null;
      const now = [...pending];
      pending.clear();
      for (const sku of now) putRow(sku, (await api.run("OpsSku", { sku })).inventory);
    }, 150);
  }, problem);
}

function feed(id, text, attributes = {}) {
  const list = document.getElementById(id);
  list.prepend(el("li", attributes, text));
  while (list.children.length > FEED_LENGTH) list.lastChild.remove();
}

function streams() {
  api.subscribe("OpsLedger", () => ({}), ({ ledger }) => {
    const d = ledger.envelope.data;
    feed("ledger", `${d.sku}@${d.location} v${d.version} ${d.reason || ledger.type} ` +
      `(on hand ${d.on_hand}, reserved ${d.reserved})`,
      { "data-key": ledger.key, "data-version": String(d.version) });
  }, problem);
  api.subscribe("OpsReservations", () => ({}), ({ reservations }) => {
    feed("reservations", `${reservations.key}: ${reservations.type.split(".")[1]}`,
      { "data-key": reservations.key });
  }, problem);
  api.subscribe("OpsOrders", () => ({}), ({ orders }) => {
    feed("orders", `${orders.key}: ${orders.type.split(".")[1]}`, { "data-key": orders.key });
  }, problem);
}

async function deliveries() {
  const { recent, dead } = await api.run("OpsDeliveries");
  const line = (d) => el("li", { "data-status": d.status },
    `${d.eventType} → ${d.status.toLowerCase()} after ${d.attempts} attempt(s)` +
    (d.lastError ? ` (${d.lastError})` : ""));
  document.getElementById("deliveries").replaceChildren(...recent.map(line));
  document.getElementById("dead").replaceChildren(...dead.map(line));
}

// Bars of each variant's rates, drawn as SVG: a chart people read at a glance.
function chart(experiment) {
  const kinds = [["click", "clicks"], ["addToCart", "carts"], ["purchase", "purchases"]];
  const rates = experiment.results.flatMap((v) => kinds.map(([k]) => v[k].rate ?? 0));
  const top = Math.max(0.0001, ...rates);
  const width = 320, bar = 14, gap = 4;
  const rows = experiment.results.flatMap((v) => kinds.map(([k, name]) => ({ v, k, name })));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * (bar + gap)}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${experiment.name}: conversion rates per variant`);
  rows.forEach(({ v, k, name }, i) => {
    const rate = v[k].rate ?? 0;
    const y = i * (bar + gap);
    const rect = document.createElementNS(svg.namespaceURI, "rect");
    Object.entries({ x: 120, y, height: bar, width: Math.max(1, (rate / top) * (width - 180)),
      class: v.control ? "bar control" : "bar" }).forEach(([a, b]) => rect.setAttribute(a, b));
    const text = document.createElementNS(svg.namespaceURI, "text");
    text.setAttribute("x", 0);
    text.setAttribute("y", y + bar - 3);
    text.textContent = `${v.name} ${name}`;
    const value = document.createElementNS(svg.namespaceURI, "text");
    value.setAttribute("x", 124 + Math.max(1, (rate / top) * (width - 180)));
    value.setAttribute("y", y + bar - 3);
    value.textContent = `${(rate * 100).toFixed(1)}%`;
    svg.append(rect, text, value);
  });
  return svg;
}

// A SKU's last 28 days as SVG bars (grey behind a day it was out of stock), its 28-day
// velocity in stock as a line, and its cover and stock-out day in words.
function salesChart(sku, days, rate) {
  const width = 560, height = 120, step = width / days.length;
  const top = Math.max(1, rate, ...days.map((d) => d.sold));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${sku}: units sold a day over ${days.length} days`);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(svg.namespaceURI, tag);
    Object.entries(attributes).forEach(([a, b]) => node.setAttribute(a, b));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  days.forEach((d, i) => {
    if (d.inStockShare < 1) {
      add("rect", { x: i * step, y: 0, width: step, height, class: "out-of-stock",
        "fill-opacity": String(0.35 * (1 - d.inStockShare)) });
    }
    const h = (d.sold / top) * height;
    add("rect", { x: i * step + 1, y: height - h, width: step - 2, height: h, class: "bar day",
      "data-day": d.day, "data-sold": String(d.sold) }, undefined)
      .append(Object.assign(document.createElementNS(svg.namespaceURI, "title"),
        { textContent: `${d.day}: ${d.sold} sold` }));
  });
  const y = height - (rate / top) * height;
  add("line", { x1: 0, x2: width, y1: y, y2: y, class: "velocity" });
  add("text", { x: 2, y: height + 12 }, days[0].day);
  add("text", { x: width - 70, y: height + 12 }, days[days.length - 1].day);
  return svg;
}

async function velocity(sku) {
  const { skuAnalytics: a, salesDays } = await api.run("OpsSkuAnalytics", { sku });
  const cover = a.daysOfCover === null ? "no sales: no stock-out in sight"
    : `${a.daysOfCover.toFixed(1)} days of cover, out on ${a.stockoutOn}`;
  document.getElementById("velocity").replaceChildren(el("figure", { "data-sku": sku },
    el("figcaption", {}, `${sku}: ${a.velocity28d.toFixed(2)} a day in stock (28 d), ` +
      `${a.velocity7d.toFixed(2)} (7 d); ${a.sold28d} sold, ${a.available} available; ${cover}; ` +
      `in stock ${(a.inStockShare28d * 100).toFixed(0)} % of 28 days`),
    salesChart(sku, salesDays, a.velocity28d)));
}

// Drops: each live drop's room (REST, refreshed every few seconds), and the asks the bot
// scoring held, each with its reasons and the two decisions staff can make.
async function rest(method, path, body) {
  const response = await fetch(path, { method, headers: {
    Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.detail || `${method} ${path}: ${response.status}`);
  return answer;
}

function heldItem(drop, ask) {
  const reasons = (ask.verdict?.reasons || []).map((r) => `${r.rule} (${r.weight})`).join(", ");
  const decide = (decision) => el("button", { type: "button", "data-decision": decision },
    decision === "admit" ? "Admit" : "Refuse");
  const item = el("li", { "data-customer": ask.customer_id, "data-drop": drop.id },
    `${ask.customer_id}: ${ask.kind} held, score ${ask.verdict?.score ?? "?"} — ${reasons} `,
    decide("admit"), decide("refuse"));
  item.addEventListener("click", (event) => {
    const decision = event.target.dataset?.decision;
    if (!decision) return;
    rest("POST", `/v1/drops/${encodeURIComponent(drop.id)}/held/` +
      encodeURIComponent(ask.customer_id), { decision }).then(drops).catch(problem);
  });
  return item;
}

async function drops() {
  const { drops: live } = await rest("GET", "/v1/drops");
  document.querySelector("#drops tbody").replaceChildren(...live.map((d) => el("tr",
    { "data-drop": d.id }, el("th", { scope: "row" }, `${d.id.slice(-8)} (${d.skus.join(", ")})`),
    el("td", {}, d.mode), el("td", {}, new Date(d.starts_at).toLocaleString()),
    el("td", {}, d.mode === "queue" ? String(d.admit_per_second) : ""),
    el("td", { class: "asks" }, String(d.room.asks)), el("td", {}, String(d.room.reached)),
    el("td", {}, String(d.room.waiting)), el("td", { class: "held" }, String(d.room.held)),
    el("td", { class: "refused" }, String(d.room.refused)),
    el("td", {}, d.room.sold_out ? "yes" : "no"))));
  const held = await Promise.all(live.filter((d) => d.room.held > 0).map(async (d) =>
    (await rest("GET", `/v1/drops/${encodeURIComponent(d.id)}/held`)).held
      .map((ask) => heldItem(d, ask))));
  document.getElementById("held").replaceChildren(...held.flat());
}

async function experiments() {
  const { experiments: all } = await api.run("OpsExperiments");
  const box = document.getElementById("experiments");
  box.replaceChildren(...(all.length ? all.map((e) => el("figure", { "data-experiment": e.id },
    el("figcaption", {}, `${e.name} (${e.status.toLowerCase()})`), chart(e)))
    : [el("p", {}, "No experiments yet.")]));
}

async function audit() {
  const node = document.getElementById("audit");
  node.textContent = "verifying…";
  const { audit: report } = await api.run("OpsAudit");
  node.dataset.ok = String(report.ok);
  node.textContent = report.ok
    ? `Ledger verified: ${report.entries} entries, ${report.levels} stock levels, every chain intact`
    : `Ledger check FAILED: ${report.problems.join("; ")}`;
}

function signIn() {
  const form = document.getElementById("signin");
  const claims = token() ? subjectOf(token()) : null;
  document.getElementById("who").textContent = claims ? `${claims.role}: ${claims.sub}` : "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (form.token.value.trim()) sessionStorage.setItem("instock.token", form.token.value.trim());
    location.reload();
  });
}

async function main() {
  signIn();
  if (!token()) {
    problem(new Error("Sign in with a staff token (instock token --role admin)."));
    return;
  }
  api = new Api(await loadOperations(), token);
  document.getElementById("run-audit").addEventListener("click", () => audit().catch(problem));
  streams();
  await stock();
  document.querySelector("#stock tbody").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-sku]");
    if (row) velocity(row.dataset.sku).catch(problem);
  });
  await Promise.all([deliveries(), experiments(), audit(), drops()]).catch(problem);
  setInterval(() => deliveries().catch(problem), 5000);
  setInterval(() => drops().catch(problem), 3000);
  setInterval(() => experiments().catch(problem), 15000);
  document.body.dataset.ready = "true";
}

main().catch(problem);
