// A machine's boot as a chart: its events on one time axis, in lanes (DHCP,
// TFTP, HTTP, workflow steps, power and boots), spans where the events give a
// duration, marks where they give a moment. buildTimeline is pure (events in,
// model out); renderTimeline draws a model as SVG.

import { svg } from "./dom.js";
import { duration, bytes, clock } from "./format.js";

export const LANES = ["DHCP", "TFTP", "HTTP", "Steps", "Power & boot"];

// A quiet spell longer than this starts a new boot session.
export const SESSION_GAP_MS = 10 * 60 * 1000;

const t = (e) => Date.parse(e.at);
const base = (p) => String(p || "").split("/").pop();

// Splits events (oldest first) into sessions separated by quiet spells.
export function sessions(events, gap = SESSION_GAP_MS) {
  const out = [];
  let cur = [];
  for (const e of events) {
    if (cur.length && t(e) - t(cur[cur.length - 1]) > gap) {
      out.push(cur);
      cur = [];
    }
    cur.push(e);
  }
  if (cur.length) out.push(cur);
  return out;
}

// {start, end, items: [{lane, kind: "span"|"mark", start, end, label, title, cls}]}
export function buildTimeline(events) {
  const items = [];
  const offered = new Map(); // mac -> offer time (until acked)
  const steps = new Map(); // workflow/step -> start event
  let installStart = null;
  const span = (lane, start, end, label, cls, title) =>
    items.push({ lane, kind: "span", start, end: Math.max(end, start), label, cls, title: title || label });
  const mark = (lane, at, label, cls, title) =>
    items.push({ lane, kind: "mark", start: at, end: at, label, cls, title: title || label });
  for (const e of events) {
    const at = t(e);
    const d = e.data || {};
    switch (e.kind) {
      case "lease_offered":
        if (!offered.has(e.mac)) offered.set(e.mac, at);
        break;
      case "lease_acked": {
        const from = offered.get(e.mac) ?? at;
        offered.delete(e.mac);
        const ip = d.ip || (e.message.match(/\d+\.\d+\.\d+\.\d+/) || [""])[0];
        span("DHCP", from, at, `DHCP ${ip}`.trim(), "dhcp", `${e.message} (${duration(at - from)})`);
        break;
      }
      case "proxy_dhcp_reply":
      case "dhcp_inform":
        mark("DHCP", at, "proxy", "dhcp", e.message);
        break;
      case "lease_nak":
      case "lease_declined":
        mark("DHCP", at, e.kind.replace("lease_", ""), "bad", e.message);
        break;
      case "tftp_sent": {
        const ms = Number(d.duration_ms || 0);
        span("TFTP", at - ms, at, base(d.file || d.path), "tftp",
          `${d.file || d.path}: ${bytes(d.bytes)} in ${duration(ms)}`);
        break;
      }
      case "tftp_failed":
        mark("TFTP", at, "failed", "bad", e.message);
        break;
      case "script_served":
        mark("HTTP", at, "script", "http", e.message);
        break;
      case "asset_served": {
        const name = base(d.path);
        const ms = d.duration_ms === undefined ? null : Number(d.duration_ms);
        const title = `${d.path}: ${bytes(d.bytes)}${ms === null ? "" : ` in ${duration(ms)}`}`;
        if (ms === null) mark("HTTP", at, name, "http", title);
        else span("HTTP", at - ms, at, name, "http", title);
        break;
      }
      case "install_file_served":
        mark("HTTP", at, "install file", "http", e.message);
        break;
      case "install_started":
        installStart = at;
        mark("Steps", at, "installer", "step", e.message);
        break;
      case "install_completed":
        if (installStart !== null) span("Steps", installStart, at, "install", "ok", e.message);
        else mark("Steps", at, "installed", "ok", e.message);
        installStart = null;
        break;
      case "step_started":
        steps.set(`${d.workflow}/${d.step}`, e);
        break;
      case "step_succeeded":
      case "step_failed":
      case "step_skipped": {
        const key = `${d.workflow}/${d.step}`;
        const started = steps.get(key);
        steps.delete(key);
        const cls = e.kind === "step_failed" ? "bad" : e.kind === "step_skipped" ? "skip" : "step";
        const from = started ? t(started) : at;
        span("Steps", from, at, d.step || "step", cls, `${e.message} (${duration(at - from)})`);
        break;
      }
      case "workflow_failed":
      case "agent_lost":
      case "power_action_failed":
      case "bmc_unreachable":
        mark(e.kind.startsWith("workflow") ? "Steps" : "Power & boot", at, e.kind.replaceAll("_", " "), "bad", e.message);
        break;
      case "power_action_done": {
        const ms = Number(d.elapsed || 0);
        span("Power & boot", at - ms, at, `power ${d.final_state || ""}`.trim(), "power", e.message);
        break;
      }
      case "power_changed":
        mark("Power & boot", at, `power ${d.state || ""}`.trim(), "power", e.message);
        break;
      case "boot_device_set":
        mark("Power & boot", at, "boot device", "power", e.message);
        break;
      case "agent_hello":
        mark("Power & boot", at, "agent up", "ok", e.message);
        break;
      case "machine_booted":
        mark("Power & boot", at, "booted", "ok", e.message);
        break;
      case "machine_discovered":
        mark("Power & boot", at, "discovered", "power", e.message);
        break;
      default:
        break;
    }
  }
  const now = Date.now();
  // Steps still running reach to now.
  for (const started of steps.values()) {
    const d = started.data || {};
    items.push({ lane: "Steps", kind: "span", start: t(started), end: Math.max(now, t(started)), label: d.step || "step", cls: "running", title: `${started.message} (running)` });
  }
  for (const [, at] of offered) items.push({ lane: "DHCP", kind: "mark", start: at, end: at, label: "offer", cls: "dhcp", title: "offered, not yet acknowledged" });
  if (!events.length) return { start: now, end: now, items };
  const start = Math.min(t(events[0]), ...items.map((i) => i.start));
  const end = Math.max(t(events[events.length - 1]), ...items.map((i) => i.end));
  return { start, end, items };
}

// Tick spacing giving about `want` ticks over `ms`.
export function tickStep(ms, want = 8) {
  const steps = [100, 250, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3];
  return steps.find((s) => ms / s <= want) || steps[steps.length - 1];
}

function relLabel(ms) {
  if (ms === 0) return "0";
  if (ms < 60e3) return `+${ms / 1000}s`;
  if (ms < 3600e3) return `+${Math.floor(ms / 60e3)}m${ms % 60e3 ? `${(ms % 60e3) / 1000}s` : ""}`;
  return `+${Math.floor(ms / 3600e3)}h${ms % 3600e3 ? `${Math.floor((ms % 3600e3) / 60e3)}m` : ""}`;
}

// The model as an SVG chart `width` pixels wide.
export function renderTimeline(model, width) {
  const left = 96;
  const right = 16;
  const top = 26;
  const laneH = 30;
  const height = top + LANES.length * laneH + 8;
  const w = Math.max(width, 320);
  const span = Math.max(model.end - model.start, 1000);
  const x = (ms) => left + ((ms - model.start) / span) * (w - left - right);
  const root = svg("svg", {
    class: "timeline",
    viewBox: `0 0 ${w} ${height}`,
    width: w,
    height,
    role: "img",
    "aria-label": `Boot timeline: ${model.items.length} items over ${duration(span)} from ${clock(new Date(model.start).toISOString())}`,
  });
  // Lanes and their names.
  LANES.forEach((name, i) => {
    const y = top + i * laneH;
    root.appendChild(svg("rect", { class: i % 2 ? "lane odd" : "lane", x: 0, y, width: w, height: laneH }));
    root.appendChild(svg("text", { class: "lane-name", x: 8, y: y + laneH / 2 + 4 }, name));
  });
  // Axis: ticks relative to the first event.
  const step = tickStep(span);
  for (let ms = 0; ms <= span; ms += step) {
    const tx = x(model.start + ms);
    root.appendChild(svg("line", { class: "tick", x1: tx, x2: tx, y1: top - 4, y2: height - 8 }));
    root.appendChild(svg("text", { class: "tick-label", x: tx, y: top - 8, "text-anchor": "middle" }, relLabel(ms)));
  }
  // Items: labels only where they fit, everything has a tooltip.
  const lastEnd = new Map();
  for (const it of model.items) {
    const lane = LANES.indexOf(it.lane);
    if (lane < 0) continue;
    const y = top + lane * laneH;
    const x1 = x(it.start);
    const g = svg("g", { class: `item ${it.kind} ${it.cls || ""}`, tabindex: 0 });
    g.appendChild(svg("title", {}, `${it.title}`));
    if (it.kind === "span") {
      const wpx = Math.max(x(it.end) - x1, 3);
      g.appendChild(svg("rect", { x: x1, y: y + 6, width: wpx, height: laneH - 12, rx: 3 }));
      const label = `${it.label} ${duration(it.end - it.start)}`;
      if (wpx > label.length * 6.2 + 6) {
        g.appendChild(svg("text", { x: x1 + 4, y: y + laneH / 2 + 4 }, label));
      } else if ((lastEnd.get(lane) ?? -1) < x1 && x1 + wpx + label.length * 6.2 < w) {
        g.appendChild(svg("text", { class: "outside", x: x1 + wpx + 3, y: y + laneH / 2 + 4 }, label));
        lastEnd.set(lane, x1 + wpx + label.length * 6.2 + 3);
      }
    } else {
      g.appendChild(svg("path", { d: `M${x1} ${y + 7} l5 8 l-5 8 l-5 -8 z` }));
      if ((lastEnd.get(lane) ?? -1) < x1 - 4 && x1 + it.label.length * 6.2 + 8 < w) {
        g.appendChild(svg("text", { class: "outside", x: x1 + 7, y: y + laneH / 2 + 4 }, it.label));
        lastEnd.set(lane, x1 + 7 + it.label.length * 6.2);
      }
    }
    root.appendChild(g);
  }
  return root;
}
