// Fleet: machines per lifecycle state (failed and waiting-too-long first), the
// machine table (paged, filtered and sorted by the server), and bulk actions
// with per-machine progress for operators.

import { h, mount, debounce, button, toast } from "./dom.js";
import { get, call, post, q, enc, canOperate } from "./api.js";
import { onEvent } from "./live.js";
import { defaultNetwork } from "./machine.js";
import { ALL_STATES, stateClass, stateLabel, ago, duration, bytes, rate, intentLabel } from "./format.js";

// Events after which the counts and the table may have changed.
const MACHINE_EVENTS = new Set([
  "machine_discovered", "machine_changed", "machine_state_changed", "maintenance_changed",
  "facts_updated", "workflow_started", "workflow_succeeded", "workflow_failed", "workflow_aborted",
]);

const SORTS = [
  ["name", "Name"],
  ["state", "State"],
  ["state_changed", "In state since"],
  ["updated", "Updated"],
];

export function fleetPage(main) {
  const st = {
    name: "", label: "", state: "", fact: "", sort: "name", limit: 50,
    cursors: [null], page: 0, next: null, total: 0, rows: [],
    selected: new Set(),
  };
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  if (params.get("state")) st.state = params.get("state");

  const summaryBox = h("section", { class: "cards", "aria-label": "Machines per state" });
  const waitingBox = h("section", { class: "waiting", "aria-label": "Waiting too long" });
  const tableBox = h("div", { class: "table-wrap" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const bulkBar = h("div", { class: "bulk", hidden: true, role: "toolbar", "aria-label": "Actions on the selected machines" });
  const progress = h("section", { class: "progress-list", "aria-label": "Progress of actions", hidden: true });
  const jobs = new Map(); // machine name -> {row, workflow}

  const input = (key, label, placeholder) =>
    h("label", {}, label, h("input", {
      type: "search", value: st[key], placeholder, name: key,
      oninput: debounce((e) => { st[key] = e.target.value.trim(); firstPage(); }, 300),
    }));
  const stateSelect = h("select", { name: "state", onchange: (e) => { st.state = e.target.value; firstPage(); } },
    h("option", { value: "" }, "any"),
    h("option", { value: "failed" }, "any failed"),
    h("option", { value: "busy" }, "workflow running"),
    ALL_STATES.map((s) => h("option", { value: s }, stateLabel(s))));
  stateSelect.value = st.state;
  const limitSelect = h("select", { name: "limit", onchange: (e) => { st.limit = Number(e.target.value); firstPage(); } },
    [50, 100, 500, 1000].map((n) => h("option", { value: n }, String(n))));
  const filters = h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    input("name", "Name", "contains…"),
    input("label", "Label", "rack=r12"),
    h("label", {}, "State", stateSelect),
    input("fact", "Fact", "memory_gib=>=64"),
    h("label", {}, "Rows", limitSelect));

  mount(main,
    h("h1", {}, "Fleet"),
    summaryBox, waitingBox, filters, bulkBar, progress, tableBox, pager);

  async function loadSummary() {
    try {
      const s = await get("/machines:summary");
      const card = (label, count, cls, state) =>
        h("button", {
          type: "button", class: `card ${cls}`, "aria-pressed": st.state === state ? "true" : "false",
          onclick: () => { st.state = st.state === state ? "" : state; stateSelect.value = st.state; firstPage(); },
        }, h("span", { class: "count" }, count.toLocaleString()), h("span", { class: "label" }, label));
      mount(summaryBox,
        s.failed ? card("failed", s.failed, "failed", "failed") : null,
        s.waiting_too_long_count ? h("div", { class: "card failed static" },
          h("span", { class: "count" }, s.waiting_too_long_count), h("span", { class: "label" }, `waiting > ${duration(s.stuck_after_secs * 1000)}`)) : null,
        s.states.map((c) => card(stateLabel(c.state), c.count, stateClass(c.state).replace("state", "").trim(), c.state)),
        card("all machines", s.total, "total", ""),
        s.maintenance ? h("div", { class: "card static" }, h("span", { class: "count" }, s.maintenance), h("span", { class: "label" }, "in maintenance")) : null);
      if (s.waiting_too_long.length) {
        mount(waitingBox, h("h2", {}, "Waiting too long"), h("ul", {},
          s.waiting_too_long.slice(0, 10).map((w) => h("li", {},
            h("a", { href: `#/machines/${enc(w.name)}` }, w.name), ` ${stateLabel(w.state)} for ${duration(w.seconds * 1000)}`))));
      } else {
        mount(waitingBox);
      }
    } catch (e) {
      mount(summaryBox, h("p", { class: "error" }, `Counts: ${e.message}`));
    }
  }

  async function loadPage() {
    const started = performance.now();
    const path = `/machines${q({
      limit: st.limit, cursor: st.cursors[st.page], name: st.name, label: st.label,
      state: st.state, fact: st.fact, sort: st.sort === "name" ? "" : st.sort,
    })}`;
    try {
      const res = await call(path);
      st.rows = res.data;
      st.next = res.headers.get("x-next-cursor");
      st.total = Number(res.headers.get("x-total-count") || res.data.length);
      renderTable();
      const ms = performance.now() - started;
      window.rackboot.fleetRender = { ms, rows: st.rows.length, total: st.total, at: Date.now() };
    } catch (e) {
      mount(tableBox, h("p", { class: "error", role: "alert" }, e.message));
    }
  }

  function firstPage() {
    st.cursors = [null];
    st.page = 0;
    loadPage();
  }

  function sortHeader(key, label) {
    const active = st.sort.replace("-", "") === key;
    const desc = st.sort.startsWith("-");
    return h("th", { scope: "col", "aria-sort": active ? (desc ? "descending" : "ascending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => {
        st.sort = active && !desc ? `-${key}` : key;
        firstPage();
      } }, label, active ? (desc ? " ▼" : " ▲") : ""));
  }

  function renderTable() {
    const operate = canOperate();
    const pageNames = st.rows.map((m) => m.name);
    const allChecked = pageNames.length > 0 && pageNames.every((n) => st.selected.has(n));
    const table = h("table", { class: "machines", id: "machine-table", dataset: { rows: st.rows.length, total: st.total } },
      h("caption", { class: "sr-only" }, "Machines"),
      h("thead", {}, h("tr", {},
        operate ? h("th", { scope: "col" }, h("input", {
          type: "checkbox", "aria-label": "Select every machine on this page", checked: allChecked,
          onchange: (e) => { pageNames.forEach((n) => e.target.checked ? st.selected.add(n) : st.selected.delete(n)); renderTable(); renderBulk(); },
        })) : null,
        sortHeader("name", "Name"),
        sortHeader("state", "State"),
        h("th", { scope: "col" }, "MAC"),
        h("th", { scope: "col" }, "Labels"),
        h("th", { scope: "col" }, "Hardware"),
        h("th", { scope: "col" }, "Boots"),
        sortHeader("state_changed", "In state since"))),
      h("tbody", {}, st.rows.map((m) => h("tr", { dataset: { machine: m.name } },
        operate ? h("td", {}, h("input", {
          type: "checkbox", "aria-label": `Select ${m.name}`, checked: st.selected.has(m.name),
          onchange: (e) => { e.target.checked ? st.selected.add(m.name) : st.selected.delete(m.name); renderBulk(); },
        })) : null,
        h("td", {}, h("a", { href: `#/machines/${enc(m.name)}` }, m.name), m.maintenance ? h("span", { class: "flag", title: m.maintenance.reason }, " maintenance") : null),
        h("td", {}, h("span", { class: stateClass(m.state) }, stateLabel(m.state))),
        h("td", { class: "mono" }, m.macs[0] || ""),
        h("td", {}, Object.entries(m.labels || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
        h("td", {}, hardware(m.facts)),
        h("td", {}, intentLabel(m.intent)),
        h("td", { title: m.state_changed_at || m.created_at }, ago(m.state_changed_at || m.created_at))))));
    mount(tableBox, st.rows.length ? table : h("p", { class: "empty" }, "No machine matches."));
    const first = st.page * st.limit;
    mount(pager,
      h("button", { type: "button", disabled: st.page === 0, onclick: () => { st.page--; loadPage(); } }, "‹ Previous"),
      h("span", { class: "range", "aria-live": "polite" },
        st.rows.length ? `${(first + 1).toLocaleString()}–${(first + st.rows.length).toLocaleString()} of ${st.total.toLocaleString()}` : `0 of ${st.total.toLocaleString()}`),
      h("button", { type: "button", disabled: !st.next, onclick: () => { st.cursors[st.page + 1] = st.next; st.page++; loadPage(); } }, "Next ›"));
  }

  let images = null;
  async function renderBulk() {
    if (!canOperate() || st.selected.size === 0) {
      bulkBar.hidden = true;
      return;
    }
    bulkBar.hidden = false;
    if (images === null) {
      images = [];
      try { images = await get("/images"); } catch { /* no image catalog on this server */ }
    }
    const imageSelect = h("select", { "aria-label": "Image to deploy" },
      images.map((i) => h("option", { value: i.name }, i.name)));
    const names = () => [...st.selected];
    mount(bulkBar,
      h("span", { class: "selected" }, `${st.selected.size} selected`),
      button("Power on", () => powerAll(names(), "on")),
      button("Power off", () => powerAll(names(), "off")),
      button("Power cycle", () => powerAll(names(), "cycle")),
      button("Inspect", () => workflowAll(names(), "inspect", {})),
      images.length ? [imageSelect, button("Deploy", () => workflowAll(names(), "deploy", async (m) => ({ image: imageSelect.value, network: defaultNetwork(st.rows.find((r) => r.name === m) || await get(`/machines/${enc(m)}`)) })))] : null,
      button("Clear selection", () => { st.selected.clear(); renderTable(); renderBulk(); }, { class: "quiet" }));
  }

  function job(machine, action) {
    const status = h("span", { class: "status" }, "waiting");
    const bar = h("progress", { max: 100, hidden: true });
    const row = h("li", { dataset: { machine } }, h("a", { href: `#/machines/${enc(machine)}` }, machine), ` ${action}: `, status, bar);
    progress.hidden = false;
    progress.prepend(row);
    const j = { row, status, bar, workflow: null };
    jobs.set(machine, j);
    return j;
  }

  function setJob(j, text, cls) {
    j.status.textContent = text;
    j.status.className = `status ${cls || ""}`;
  }

  async function powerAll(machines, action) {
    const queue = machines.map((m) => [m, job(m, `power ${action}`)]);
    // A few at a time: each waits for its BMC to confirm.
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const [m, j] = next;
        setJob(j, "running…", "busy");
        try {
          const r = (await post(`/machines/${enc(m)}/power`, { action })).data;
          setJob(j, `${r.message}`, "ok");
        } catch (e) {
          setJob(j, e.message, "bad");
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  // `request` is the request, or a function giving each machine's (a deploy
  // names each machine's host): then one request per machine.
  async function workflowAll(machines, workflow, request) {
    const js = new Map(machines.map((m) => [m, job(m, workflow)]));
    const show = (s) => {
      const j = js.get(s.machine);
      if (!j) return;
      if (s.error) setJob(j, s.error, "bad");
      else {
        j.workflow = s.workflow.id;
        setJob(j, s.workflow.state, "busy");
      }
    };
    const batches = typeof request === "function"
      ? machines.map((m) => [[m], () => request(m)])
      : [[machines, () => request]];
    for (const [names, makeRequest] of batches) {
      try {
        const req = await makeRequest();
        const started = (await post("/workflows", { workflow, machines: names, request: req })).data;
        started.forEach(show);
      } catch (e) {
        for (const n of names) setJob(js.get(n), e.message, "bad");
        if (names.length > 1) toast(e.message, "error");
      }
    }
  }

  function onWorkflowEvent(e) {
    const d = e.data || {};
    if (!d.workflow) return;
    const j = [...jobs.values()].find((x) => x.workflow === d.workflow);
    if (!j) return;
    switch (e.kind) {
      case "step_started":
        setJob(j, `step ${d.step}`, "busy");
        break;
      case "step_progress":
        if (d.total) {
          j.bar.hidden = false;
          j.bar.value = (100 * d.done) / d.total;
        }
        setJob(j, `${d.step}: ${bytes(d.done)}${d.total ? ` of ${bytes(d.total)}` : ""} ${rate(d.rate)}`, "busy");
        break;
      case "workflow_succeeded":
        j.bar.hidden = true;
        setJob(j, "succeeded", "ok");
        break;
      case "workflow_failed":
      case "workflow_aborted":
        j.bar.hidden = true;
        setJob(j, e.message, "bad");
        break;
      default:
        break;
    }
  }

  const refresh = debounce(() => { loadSummary(); loadPage(); }, 1000);
  const off = onEvent((e) => {
    onWorkflowEvent(e);
    if (MACHINE_EVENTS.has(e.kind)) refresh();
  });
  loadSummary();
  loadPage();
  return off;
}

function hardware(f) {
  if (!f) return "";
  const parts = [];
  if (f.cpu && f.cpu.threads) parts.push(`${f.cpu.threads} threads`);
  if (f.memory_bytes) parts.push(bytes(f.memory_bytes));
  if (f.disks && f.disks.length) parts.push(`${f.disks.length} disk${f.disks.length > 1 ? "s" : ""}`);
  return parts.join(", ");
}
