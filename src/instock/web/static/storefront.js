// The drop storefront: one product's sizes with live stock, a countdown to the drop, a cart
// that holds stock, checkout through the payment provider, a waitlist for sold-out sizes and a
// recommendations strip that drops what sells out. Everything through GraphQL.
import { Api, GraphQLError, el, loadOperations, sessionId, subjectOf, tokenFromPage } from "./graphql.js";

const drop = document.getElementById("drop");
const productId = drop.dataset.productId;
const channel = drop.dataset.channel;
const startsAt = drop.dataset.startsAt ? new Date(drop.dataset.startsAt) : null;
const token = tokenFromPage();
const state = { stock: {}, selected: null, cart: null, product: null };
let api;

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.textContent = ""), 6000);
}

function isOpen() {
  return !startsAt || Date.now() >= startsAt.getTime();
}

function countdown() {
  const node = document.getElementById("countdown");
  if (isOpen()) {
    node.textContent = "The drop is live";
    node.dataset.open = "true";
    render();
    return;
  }
  const left = Math.max(0, startsAt.getTime() - Date.now());
  const s = Math.floor(left / 1000);
  const parts = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60, s % 60];
  node.textContent = `Drops in ${parts[0]}d ${parts[1]}h ${parts[2]}m ${parts[3]}s`;
  node.dataset.open = "false";
  setTimeout(countdown, 1000 - (Date.now() % 1000));
}

function label(stock) {
  if (!stock) return "";
  if (stock.soldOut) return "sold out";
  if (stock.low || stock.available <= 5) return `only ${stock.available} left`;
  return "in stock";
}

function render() {
  const sizes = document.getElementById("sizes");
  for (const option of sizes.querySelectorAll("[data-sku]")) {
    const stock = state.stock[option.dataset.sku];
    option.dataset.available = String(stock?.available ?? 0);
    option.dataset.soldOut = stock?.soldOut ? "true" : "false";
    option.querySelector(".left").textContent = label(stock);
  }
  const chosen = state.stock[state.selected];
  const reserve = document.getElementById("reserve");
  const waitlist = document.getElementById("waitlist");
  reserve.disabled = !chosen || chosen.soldOut || !isOpen();
  reserve.textContent = !token() ? "Sign in to reserve" : "Reserve";
  if (!token()) reserve.disabled = true;
  waitlist.hidden = !(chosen && chosen.soldOut);
}

function applyStock(change) {
  const known = state.stock[change.sku];
  if (known && known.version >= change.version) return; // never go back
  state.stock[change.sku] = change;
  render();
}

async function loadProduct() {
  const { product } = await api.run("ProductPage", { id: productId, channel });
  state.product = product;
  document.getElementById("product-title").textContent = product.title;
  document.getElementById("product-meta").textContent =
    `${product.brand} · ${Number(product.price).toFixed(2)} ${product.currency}`;
  const sizes = document.getElementById("sizes");
  product.variants.forEach((variant, i) => {
    const id = `size-${i}`;
    sizes.append(el("div", { class: "size", "data-sku": variant.sku, "data-available": "0" },
      el("input", {
        type: "radio", name: "size", id, value: variant.sku,
        onchange: () => { state.selected = variant.sku; render(); },
      }),
      el("label", { for: id }, variant.size ?? variant.sku),
      el("span", { class: "left", "aria-live": "polite" })));
    applyStock({ sku: variant.sku, ...variant.stock });
  });
  api.subscribe("StockChanged", () => ({
    skus: product.variants.map((v) => v.sku), channel,
    // resume: the server sends only SKUs that moved past the oldest version we hold
    afterVersion: Math.min(...product.variants.map((v) => state.stock[v.sku]?.version ?? 0)),
  }), (data) => applyStock(data.stockChanged));
}

function renderCart() {
  const box = document.getElementById("cart");
  const cart = state.cart;
  box.hidden = !cart || cart.items.length === 0;
  if (!cart) return;
  const list = document.getElementById("cart-items");
  list.replaceChildren(...cart.items.map((item) => el("li", { "data-cart-sku": item.sku },
    `${item.sku} × ${item.quantity} `,
    el("button", { type: "button", class: "link", onclick: () => remove(item.sku) }, "Remove"))));
  document.getElementById("cart-expiry").textContent = cart.expiresAt
    ? `Held until ${new Date(cart.expiresAt).toLocaleTimeString()}` : "";
}

async function reserve() {
  try {
    const { addToCart } = await api.run("AddToCart", {
      sku: state.selected, cartId: state.cart?.id ?? null, channel });
    state.cart = addToCart;
    renderCart();
    toast(`${state.selected} is held for you`);
  } catch (error) {
    toast(error instanceof GraphQLError ? error.errors[0].message : String(error));
  }
}

async function remove(sku) {
  const { removeFromCart } = await api.run("RemoveFromCart", { cartId: state.cart.id, sku });
  state.cart = removeFromCart;
  renderCart();
}

async function checkout() {
  const status = document.getElementById("order");
  status.textContent = "Paying…";
  try {
    let { checkout: order } = await api.run("Checkout", { cartId: state.cart.id, channel });
    for (let i = 0; i < 60 && order.saga?.status === "RUNNING"; i++) {
      await new Promise((r) => setTimeout(r, 500)); // a step waits for the provider
      order = (await api.run("Order", { id: order.id })).order;
    }
    state.cart = null;
    renderCart();
    status.dataset.status = order.status;
    status.textContent = `Order ${order.id}: ${order.status.toLowerCase()} ` +
      `(${Number(order.total).toFixed(2)} ${order.currency})`;
  } catch (error) {
    status.dataset.status = "FAILED";
    status.textContent = error instanceof GraphQLError ? error.errors[0].message : String(error);
  }
}

async function joinWaitlist() {
  try {
    await api.run("JoinWaitlist", { sku: state.selected });
    toast(`We will tell you when ${state.selected} is back`);
  } catch (error) {
    toast(error instanceof GraphQLError ? error.errors[0].message : String(error));
  }
}

function recommendations() {
  const claims = token() ? subjectOf(token()) : null;
  const customerId = claims?.role === "customer" ? claims.sub : null;
  api.subscribe("RecommendationsChanged", () => ({
    sessionId: customerId ? null : sessionId(), customerId,
    context: `product:${productId}`, limit: 8,
  }), (data) => {
    const list = document.getElementById("recs");
    list.replaceChildren(...data.recommendationsChanged.items.map((item) =>
      el("li", { class: "card", "data-rec-sku": item.sku, "data-product-id": item.productId },
        el("strong", {}, item.title), el("span", { class: "meta" }, item.brand),
        el("span", { class: "why" }, item.reason))));
  }, (error) => console.warn("recommendations", error));
}

function signIn() {
  const form = document.getElementById("signin");
  const who = document.getElementById("who");
  const show = () => {
    const claims = token() ? subjectOf(token()) : null;
    who.textContent = claims ? `signed in as ${claims.sub}` : "browsing as a guest";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = form.token.value.trim();
    if (value) sessionStorage.setItem("instock.token", value);
    location.reload();
  });
  show();
}

async function main() {
  api = new Api(await loadOperations(), token);
  signIn();
  document.getElementById("reserve").addEventListener("click", reserve);
  document.getElementById("checkout").addEventListener("click", checkout);
  document.getElementById("waitlist").addEventListener("click", joinWaitlist);
  await loadProduct();
  recommendations();
  countdown();
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  document.getElementById("product-title").textContent = `Could not load the drop: ${error.message}`;
});
