// The live event stream, read with fetch() so the bearer token travels in a
// header (EventSource cannot send one, and a token in a URL ends up in logs).
// A dropped connection is opened again with Last-Event-ID: the server replays
// what was missed, so no event is lost across a reconnect.

import { token, get } from "./api.js";

const listeners = new Set();
let controller = null;
let running = false;

export const live = {
  connected: false,
  // Id of the last event received (the resume point).
  lastId: null,
  connects: 0,
  received: 0,
};

// fn(event) for every event from now on; returns the unsubscribe function.
export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

const statusListeners = new Set();
export function onStatus(fn) {
  statusListeners.add(fn);
  fn(live);
  return () => statusListeners.delete(fn);
}

function setConnected(c) {
  live.connected = c;
  for (const fn of statusListeners) fn(live);
}

// Parses SSE text: returns the complete events in `buffer` and what is left.
export function parseSse(buffer) {
  const events = [];
  const blocks = buffer.replaceAll("\r\n", "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const ev = { id: null, event: "message", data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") ev.id = value;
      else if (field === "event") ev.event = value;
      else if (field === "data") ev.data.push(value);
    }
    if (ev.data.length || ev.id !== null) events.push({ ...ev, data: ev.data.join("\n") });
  }
  return { events, rest };
}

function dispatch(raw) {
  if (raw.id !== null && raw.id !== "") live.lastId = Number(raw.id);
  if (raw.event === "lagged" || raw.event === "error" || !raw.data) return;
  let event;
  try {
    event = JSON.parse(raw.data);
  } catch {
    return;
  }
  live.received++;
  for (const fn of listeners) {
    try {
      fn(event);
    } catch (e) {
      console.error(e);
    }
  }
}

async function connectOnce() {
  controller = new AbortController();
  const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token()}` };
  if (live.lastId !== null) headers["Last-Event-ID"] = String(live.lastId);
  const res = await fetch("/api/v1/events/stream", { headers, signal: controller.signal });
  if (res.status === 401) {
    window.dispatchEvent(new CustomEvent("rackboot:signed-out"));
    running = false;
    return;
  }
  if (!res.ok || !res.body) throw new Error(`event stream: ${res.status}`);
  live.connects++;
  setConnected(true);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const { events, rest } = parseSse(buffer);
    buffer = rest;
    events.forEach(dispatch);
  }
}

// Follows the stream until stop(), reconnecting with a growing pause.
export async function start() {
  if (running) return;
  running = true;
  if (live.lastId === null) {
    // Start from the newest stored event, so what happens while the page
    // loads is replayed rather than missed.
    try {
      const newest = await get("/events?tail=1");
      live.lastId = newest.length ? newest[newest.length - 1].id : 0;
    } catch {
      live.lastId = null;
    }
  }
  let pause = 500;
  while (running) {
    try {
      await connectOnce();
      pause = 500;
    } catch (e) {
      if (!running) break;
    }
    setConnected(false);
    if (!running) break;
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 15000);
  }
}

export function stop() {
  running = false;
  if (controller) controller.abort();
  setConnected(false);
}

// Drops the connection as a network failure would; the loop reconnects and
// resumes after the last event seen.
export function drop() {
  if (controller) controller.abort();
}
