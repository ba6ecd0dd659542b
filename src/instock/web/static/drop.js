// A drop's waiting room in the shopper's browser: solve the proof of work (SHA-256 through Web
// Crypto), take a place, watch it move, and once admitted reserve with the pass the room gives
// (the Drop-Pass header). Sold out: the waitlist instead. REST with the shopper's own token.
import { el, subjectOf, tokenFromPage } from "./graphql.js";

const room = document.getElementById("room");
const dropId = room.dataset.dropId;
const token = tokenFromPage();
const state = {
  drop: null, ticket: null, standing: null, selected: null, reserved: null, stop: null,
};
const RETRY_MS = 1000;

class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function rest(method, path, body, headers = {}) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, ...headers,
      ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Problem(response.status, answer);
  return answer;
}

function say(text, status = "") {
  const node = document.getElementById("room-status");
  node.textContent = text;
  room.dataset.state = status || room.dataset.state;
}

function live(up) {
  const node = document.querySelector("[data-live-status]");
  node.textContent = up ? "live" : "reconnecting…";
  node.dataset.up = up ? "true" : "false";
}

// -- proof of work ----------------------------------------------------------------------------

function leadingZeroBits(bytes) {
  let bits = 0;
  for (const byte of bytes) {
    if (byte) return bits + Math.clz32(byte) - 24;
    bits += 8;
  }
  return bits;
}

// The same search as the server's drops/bots.py `solve`: count up until SHA-256(challenge ":" n)
// starts with `difficulty` zero bits. Digests in batches, so the browser works in parallel.
async function solve(challenge, difficulty) {
  if (!crypto.subtle) throw new Error("this page needs a secure context (https or localhost)");
  const encoder = new TextEncoder();
  const BATCH = 512;
  for (let start = 0; ; start += BATCH) {
    const digests = await Promise.all(Array.from({ length: BATCH }, (_, i) =>
      crypto.subtle.digest("SHA-256", encoder.encode(`${challenge}:${start + i}`))));
    const found = digests.findIndex((d) => leadingZeroBits(new Uint8Array(d)) >= difficulty);
    if (found >= 0) return String(start + found);
  }
}

// -- the place --------------------------------------------------------------------------------

function ticketKey() {
  return `instock.drop.${dropId}.${subjectOf(token())?.sub ?? ""}`;
}

async function takePlace() {
  say("Checking you are a person…", "proving");
  const issued = await rest("GET", `/v1/drops/${dropId}/challenge`);
  const solution = await solve(issued.challenge, issued.difficulty);
  say("Taking your place…", "entering");
  const taken = await rest("POST", `/v1/drops/${dropId}/tickets`,
    { challenge: issued.challenge, solution });
  sessionStorage.setItem(ticketKey(), taken.ticket);
  return taken.ticket;
}

function ticketPath(ticket) {
  return `/v1/drops/${dropId}/tickets/${encodeURIComponent(ticket)}`;
}

// The one place that learns how the ticket stands: the room pushes it (SSE, event `standing`:
// position among those still waiting, admitted, sold out, wait, waitlist). The browser's
// EventSource reconnects by itself after a network error; a refused stream (a ticket that is
// forged, expired or not ours: 422) is closed for good, and the place is taken again.
// Calls onStanding with each view; returns a stop function.
function watch(ticket, onStanding, onLost) {
  const source = new EventSource(`${ticketPath(ticket)}/events`);
  source.addEventListener("standing", (event) => {
    live(true);
    onStanding(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    live(false);
    if (source.readyState !== EventSource.CLOSED) return; // reconnecting
    rest("GET", ticketPath(ticket)).then(() => setTimeout(() => {
      state.stop = watch(ticket, onStanding, onLost); // the stream ended: watch again
    }, RETRY_MS), (error) => {
      if (error instanceof Problem && error.status === 422) onLost(error);
    });
  });
  return () => source.close();
}

function waitText(seconds) {
  if (seconds < 1) return "any moment now";
  if (seconds < 90) return `about ${Math.ceil(seconds)} s`;
  return `about ${Math.round(seconds / 60)} min`;
}

function started() {
  return Date.now() >= new Date(state.drop.starts_at).getTime();
}

function show(standing) {
  state.standing = standing;
  document.getElementById("standing").hidden = false;
  const position = document.getElementById("position");
  position.dataset.position = String(standing.position);
  position.textContent = standing.admitted ? "your turn" : started() ? `${standing.position}`
    : `${standing.position} (for now: everyone here before the start is shuffled at it)`;
  document.getElementById("wait").textContent = standing.admitted || standing.sold_out
    ? "none" : waitText(standing.wait_seconds);
  document.getElementById("admitted").hidden = !standing.admitted || !!state.reserved;
  document.getElementById("sold-out").hidden = !standing.sold_out || !!state.reserved;
  if (state.reserved) return render();
  if (standing.held_for_review) say("Your place is kept while we check your entry.", "review");
  else if (standing.sold_out) say("Sold out.", "sold-out");
  else if (standing.admitted) say("It is your turn.", "admitted");
  else if (!started()) say("You are in the waiting room: the drop has not started.", "waiting");
  else say("You are in the queue: this page moves you up as the room admits.", "waiting");
  render();
}

function render() {
  const standing = state.standing;
  const admitted = !!standing?.admitted && !state.reserved;
  const soldOut = !!standing?.sold_out && !state.reserved;
  document.getElementById("room-sizes").hidden = !(admitted || soldOut);
  const reserve = document.getElementById("room-reserve");
  reserve.hidden = !admitted;
  reserve.disabled = !admitted || !state.selected;
  const waitlist = document.getElementById("room-waitlist");
  waitlist.hidden = !soldOut;
  waitlist.disabled = !soldOut || !state.selected;
}

function countdown() {
  const node = document.getElementById("room-countdown");
  const left = new Date(state.drop.starts_at).getTime() - Date.now();
  if (left <= 0) {
    node.textContent = "The drop is live";
    node.dataset.open = "true";
    return;
  }
  const s = Math.floor(left / 1000);
  node.textContent = `Drops in ${Math.floor(s / 60)}m ${s % 60}s`;
  node.dataset.open = "false";
  setTimeout(countdown, 1000 - (Date.now() % 1000));
}

function sizes() {
  const box = document.getElementById("room-sizes");
  state.drop.skus.forEach((sku, i) => {
    const id = `room-sku-${i}`;
    box.append(el("div", { class: "size", "data-sku": sku },
      el("input", { type: "radio", name: "sku", id, value: sku,
        onchange: () => { state.selected = sku; render(); } }),
      el("label", { for: id }, sku)));
  });
}

async function reserve() {
  const held = document.getElementById("held");
  try {
    // The stream never carries the pass: a fresh one from the authenticated standing.
    const { pass } = await rest("GET", ticketPath(state.ticket));
    if (!pass) throw new Error("the room has not let you in (yet)");
    const reservation = await rest("POST", "/v1/reservations",
      { lines: [{ sku: state.selected, quantity: 1 }] }, { "Drop-Pass": pass });
    state.reserved = reservation;
    state.stop?.(); // the place has done its work: no more asking
    held.dataset.status = "HELD";
    held.textContent = `${state.selected} is held for you until ` +
      `${new Date(reservation.expires_at).toLocaleTimeString()} (reservation ${reservation.id})`;
    say("Reserved.", "reserved");
    show(state.standing);
  } catch (error) {
    held.dataset.status = "FAILED";
    held.textContent = error.message;
  }
}

async function joinWaitlist() {
  const held = document.getElementById("held");
  try {
    await rest("POST", "/v1/waitlist", { sku: state.selected });
    held.dataset.status = "WAITLISTED";
    held.textContent = `We will tell you when ${state.selected} is back`;
  } catch (error) {
    held.dataset.status = "FAILED";
    held.textContent = error.message;
  }
}

async function main() {
  if (!token()) {
    say("Open this page with your shopper link (…#token=…) to join the queue.", "signed-out");
    return;
  }
  state.drop = await rest("GET", `/v1/drops/${dropId}`);
  document.getElementById("room-skus").textContent = `${state.drop.skus.join(", ")} · ` +
    `${state.drop.admit_per_second} admitted a second from ` +
    `${new Date(state.drop.starts_at).toLocaleTimeString()}`;
  countdown();
  if (state.drop.mode !== "queue") {
    say("This drop has no waiting room.", "no-room");
    return;
  }
  sizes();
  document.getElementById("room-reserve").addEventListener("click", reserve);
  document.getElementById("room-waitlist").addEventListener("click", joinWaitlist);
  const enter = async () => {
    state.ticket = sessionStorage.getItem(ticketKey()) || await takePlace();
    state.stop = watch(state.ticket, show, () => {
      sessionStorage.removeItem(ticketKey()); // expired or not ours: take the place again
      enter().catch(failed);
    });
  };
  await enter();
  document.body.dataset.ready = "true";
}

function failed(error) {
  say(`Could not join the queue: ${error.message}`, "failed");
}

main().catch(failed);
