// Leases and Events, with filters; events follow the live stream.

import { h, mount, debounce } from "./dom.js";
import { call, get, q, enc } from "./api.js";
import { onEvent } from "./live.js";
import { clock, dateTime, ago } from "./format.js";

const LEASE_STATES = ["", "bound", "offered", "declined", "released", "expired"];

export function leasesPage(main) {
  const st = { text: "", state: "", cursors: [null], page: 0, next: null, rows: [] };
  const box = h("div", { class: "table-wrap" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const render = () => {
    const text = st.text.toLowerCase();
    const rows = st.rows.filter((l) => (!st.state || l.state === st.state) &&
      (!text || [l.ip, l.mac, l.hostname, l.client_id, l.subnet].some((v) => v && String(v).toLowerCase().includes(text))));
    mount(box, rows.length ? h("table", { id: "lease-table" },
      h("thead", {}, h("tr", {}, ["Address", "MAC", "Host name", "State", "Expires", "Subnet", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((l) => h("tr", {},
        h("td", { class: "mono" }, l.ip), h("td", { class: "mono" }, l.mac ? h("a", { href: `#/machines/${enc(l.mac)}` }, l.mac) : ""),
        h("td", {}, l.hostname || ""), h("td", {}, h("span", { class: `lease ${l.state}` }, l.state)),
        h("td", { title: l.expires_at }, ago(l.expires_at)), h("td", {}, l.subnet), h("td", {}, dateTime(l.updated_at))))))
      : h("p", { class: "empty" }, "No lease matches."));
    mount(pager,
      h("button", { type: "button", disabled: st.page === 0, onclick: () => { st.page--; load(); } }, "‹ Previous"),
      h("span", { class: "range" }, `${rows.length} of ${st.rows.length} on this page`),
      h("button", { type: "button", disabled: !st.next, onclick: () => { st.cursors[st.page + 1] = st.next; st.page++; load(); } }, "Next ›"));
  };
  const load = async () => {
    try {
      const res = await call(`/leases${q({ limit: 500, cursor: st.cursors[st.page] })}`);
      st.rows = res.data;
      st.next = res.headers.get("x-next-cursor");
      render();
    } catch (e) {
      mount(box, h("p", { class: "error" }, e.message));
    }
  };
  mount(main, h("h1", {}, "DHCP leases"),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Address, MAC or host", h("input", { type: "search", oninput: debounce((e) => { st.text = e.target.value.trim(); render(); }, 200) })),
      h("label", {}, "State", h("select", { onchange: (e) => { st.state = e.target.value; render(); } },
        LEASE_STATES.map((s) => h("option", { value: s }, s || "any"))))),
    box, pager);
  load();
  return null;
}

const EVENT_KINDS = [
  "lease_offered", "lease_acked", "lease_nak", "lease_declined", "lease_released", "dhcp_inform",
  "proxy_dhcp_reply", "pool_low", "tftp_sent", "tftp_failed", "script_served", "asset_served",
  "machine_discovered", "machine_changed", "profile_changed", "service_started", "power_changed",
  "power_action_done", "power_action_failed", "boot_device_set", "install_requested",
  "install_file_served", "install_started", "install_completed", "machine_state_changed",
  "maintenance_changed", "facts_updated", "workflow_queued", "workflow_started",
  "workflow_succeeded", "workflow_failed", "workflow_aborted", "step_started", "step_progress",
  "step_succeeded", "step_failed", "step_skipped", "agent_token_issued", "agent_hello",
  "agent_lost", "agent_log", "machine_booted", "image_imported", "image_deleted", "webhook_failed",
  "bmc_unreachable", "bmc_reachable", "token_changed", "access_refused",
];

export function eventsPage(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const st = { kind: params.get("kind") || "", machine: params.get("machine") || "", tail: 200, paused: false, rows: [], machineId: null, macs: [] };
  const box = h("div", { class: "table-wrap" });
  const count = h("span", { class: "muted", "aria-live": "polite" });
  const row = (e) => h("tr", { class: e.kind.includes("fail") || e.kind === "agent_lost" ? "bad" : "", dataset: { id: e.id } },
    h("td", { class: "mono", title: e.at }, clock(e.at)), h("td", {}, e.kind),
    h("td", { class: "mono" }, e.mac ? h("a", { href: `#/machines/${enc(e.mac)}` }, e.mac) : ""), h("td", {}, e.message));
  const tbody = h("tbody");
  const render = () => {
    mount(tbody, st.rows.slice().reverse().map(row));
    mount(box, st.rows.length ? h("table", { id: "event-table" },
      h("thead", {}, h("tr", {}, ["Time", "Kind", "MAC", "Message"].map((c) => h("th", { scope: "col" }, c)))), tbody)
      : h("p", { class: "empty" }, "No event matches."));
    count.textContent = `${st.rows.length} events`;
  };
  const load = async () => {
    try {
      st.machineId = null;
      st.macs = [];
      if (st.machine) {
        const m = await get(`/machines/${enc(st.machine)}`);
        st.machineId = m.id;
        st.macs = m.macs;
      }
      st.rows = await get(`/events${q({ tail: st.tail, kind: st.kind, machine: st.machine })}`);
      render();
    } catch (e) {
      mount(box, h("p", { class: "error" }, e.message));
    }
  };
  mount(main, h("h1", {}, "Events ", count),
    h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Kind", h("select", { value: st.kind, onchange: (e) => { st.kind = e.target.value; load(); } },
        h("option", { value: "" }, "any"), EVENT_KINDS.map((k) => h("option", { value: k, selected: k === st.kind }, k)))),
      h("label", {}, "Machine", h("input", { type: "search", value: st.machine, placeholder: "name or MAC",
        oninput: debounce((e) => { st.machine = e.target.value.trim(); load(); }, 400) })),
      h("label", {}, "Newest", h("select", { onchange: (e) => { st.tail = Number(e.target.value); load(); } },
        [200, 500, 1000].map((n) => h("option", { value: n }, String(n))))),
      h("label", { class: "check" }, h("input", { type: "checkbox", onchange: (e) => { st.paused = e.target.checked; } }), " Pause live updates")),
    box);
  const off = onEvent((e) => {
    if (st.paused) return;
    if (st.kind && e.kind !== st.kind) return;
    if (st.machine && !(e.machine === st.machineId || (e.mac && st.macs.includes(e.mac)))) return;
    st.rows.push(e);
    if (st.rows.length > st.tail) st.rows.shift();
    if (tbody.isConnected) {
      tbody.prepend(row(e));
      if (tbody.children.length > st.tail) tbody.lastChild.remove();
      count.textContent = `${st.rows.length} events`;
    } else {
      render();
    }
  });
  load();
  return off;
}
