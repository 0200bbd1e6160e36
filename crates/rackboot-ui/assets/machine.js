// One machine: state and what it waits for, its workflow with live progress,
// the boot timeline chart, failures with the agent's log, facts, BMC and power,
// boot intent, and its recent events. Live from the event stream.

import { h, mount, debounce, button, toast } from "./dom.js";
import { get, post, put, call, enc, canOperate } from "./api.js";
import { onEvent } from "./live.js";
import { buildTimeline, renderTimeline, sessions } from "./timeline.js";
import { stateClass, stateLabel, ago, duration, bytes, rate, intentLabel, dateTime, clock, FAILED_STATES } from "./format.js";

const RELOAD_KINDS = new Set([
  "machine_changed", "machine_state_changed", "maintenance_changed", "facts_updated",
  "workflow_queued", "workflow_started", "workflow_succeeded", "workflow_failed", "workflow_aborted",
  "step_started", "step_succeeded", "step_failed", "step_skipped", "step_progress", "agent_hello",
  "install_completed", "boot_device_set",
]);

export function machinePage(main, ref) {
  const m = { machine: null, status: null, events: [], power: null, powerError: null, session: -1, images: null, rates: {} };
  const head = h("header", { class: "machine-head" });
  const actions = h("div", { class: "actions", role: "toolbar", "aria-label": "Actions" });
  const statusBox = h("section", { class: "panel", "aria-labelledby": "h-status" });
  const workflowBox = h("section", { class: "panel", "aria-labelledby": "h-workflow" });
  const chartBox = h("section", { class: "panel wide", "aria-labelledby": "h-timeline" });
  const failBox = h("section", { class: "panel wide", "aria-labelledby": "h-failures" });
  const factsBox = h("section", { class: "panel", "aria-labelledby": "h-facts" });
  const powerBox = h("section", { class: "panel", "aria-labelledby": "h-power" });
  const eventsBox = h("section", { class: "panel wide", "aria-labelledby": "h-events" });
  mount(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Fleet"), " / ", ref),
    head, actions,
    h("div", { class: "grid" }, statusBox, powerBox, workflowBox, factsBox, chartBox, failBox, eventsBox));

  let alive = true;
  async function loadMachine() {
    try {
      m.machine = await get(`/machines/${enc(ref)}`);
    } catch (e) {
      mount(head, h("h1", {}, ref), h("p", { class: "error", role: "alert" }, e.message));
      return false;
    }
    try {
      m.status = await get(`/machines/${enc(ref)}/status`);
    } catch {
      m.status = null;
    }
    renderHead();
    renderActions();
    renderStatus();
    renderWorkflow();
    renderFacts();
    renderPower();
    return true;
  }

  async function loadEvents() {
    let after = 0;
    const all = [];
    for (let i = 0; i < 20; i++) {
      const page = await get(`/machines/${enc(ref)}/timeline?limit=1000&after=${after}`);
      all.push(...page);
      if (page.length < 1000) break;
      after = page[page.length - 1].id;
    }
    const seen = new Set(all.map((e) => e.id));
    // Live events that arrived while loading.
    for (const e of m.events) if (!seen.has(e.id)) all.push(e);
    all.sort((a, b) => a.id - b.id);
    m.events = all;
    renderChart();
    renderFailures();
    renderEvents();
  }

  async function loadPower() {
    if (!m.machine || !m.machine.bmc) return;
    try {
      m.power = (await get(`/machines/${enc(ref)}/power`)).state;
      m.powerError = null;
    } catch (e) {
      m.powerError = e.message;
    }
    renderPower();
  }

  function renderHead() {
    const x = m.machine;
    mount(head,
      h("h1", {}, x.name, " ", h("span", { class: stateClass(x.state), id: "machine-state" }, stateLabel(x.state))),
      x.maintenance ? h("p", { class: "flag" }, `In maintenance: ${x.maintenance.reason} (by ${x.maintenance.by}, ${ago(x.maintenance.since)})`) : null,
      x.state_reason ? h("p", { class: FAILED_STATES.has(x.state) ? "error" : "note" }, x.state_reason) : null);
  }

  function renderActions() {
    if (!canOperate()) {
      mount(actions);
      return;
    }
    const x = m.machine;
    const wf = m.status && m.status.workflow;
    const act = async (what, fn) => {
      try {
        const r = await fn();
        m.lastAction = { text: `${what}${r && r.message ? `: ${r.message}` : ": done"}`, cls: "note" };
      } catch (e) {
        m.lastAction = { text: `${what}: ${e.message}`, cls: "error" };
        toast(`${x.name}: ${what}: ${e.message}`, "error");
      }
      loadMachine();
    };
    const powerAct = (action) => act(`power ${action}`, async () => {
      const r = (await post(`/machines/${enc(x.name)}/power`, { action })).data;
      m.power = r.state || m.power;
      renderPower();
      return r;
    });
    const imageSelect = h("select", { "aria-label": "Image to deploy", id: "deploy-image" },
      (m.images || []).map((i) => h("option", { value: i.name }, i.name)));
    const start = (workflow, request = {}) =>
      act(workflow, async () => (await post("/workflows", { workflow, machines: [x.name], request })).data[0].workflow && { message: "started" });
    mount(actions,
      x.bmc ? [
        button("Power on", () => powerAct("on"), { "data-action": "power-on" }),
        button("Power off", () => powerAct("off"), { "data-action": "power-off" }),
        button("Power cycle", () => powerAct("cycle"), { "data-action": "power-cycle" }),
        button("PXE on next boot", () => act("boot device pxe", async () =>
          (await put(`/machines/${enc(x.name)}/boot-device`, { device: "pxe", once: true })).data), { "data-action": "boot-pxe" }),
      ] : null,
      button("Inspect", () => start("inspect"), { "data-action": "inspect" }),
      m.images && m.images.length ? h("span", { class: "group" }, imageSelect,
        button("Deploy", () => start("deploy", { image: imageSelect.value, network: defaultNetwork(x) }), { "data-action": "deploy" })) : null,
      wf && (wf.state === "running" || wf.state === "queued")
        ? button("Abort workflow", () => act("abort", async () => (await post(`/workflows/${wf.id}/abort`, {})).data), { class: "danger", "data-action": "abort" }) : null,
      wf && wf.state === "failed"
        ? button("Retry workflow", () => act("retry", async () => (await post(`/workflows/${wf.id}/retry`, {})).data), { "data-action": "retry" }) : null,
      h("span", { class: "group" },
        button("Boot by selector", () => act("boot by selector", async () => (await put(`/machines/${enc(x.name)}/boot`, { kind: "profile" })).data), { class: "quiet" }),
        button("Boot local disk", () => act("boot local disk", async () => (await put(`/machines/${enc(x.name)}/boot`, { kind: "local_disk" })).data), { class: "quiet" })),
      m.lastAction ? h("p", { class: `last-action ${m.lastAction.cls}`, id: "last-action", role: "status" }, m.lastAction.text) : null);
  }

  function renderStatus() {
    const s = m.status;
    const x = m.machine;
    mount(statusBox, h("h2", { id: "h-status" }, "Status"),
      h("dl", {},
        h("dt", {}, "State"), h("dd", {}, stateLabel(x.state), x.state_changed_at ? ` since ${dateTime(x.state_changed_at)}` : ""),
        h("dt", {}, "Boots next"), h("dd", { id: "intent" }, intentLabel(x.intent)),
        s && s.waiting_for ? [h("dt", {}, "Waiting for"), h("dd", { id: "waiting-for" }, s.waiting_for)] : null,
        s && s.since ? [h("dt", {}, "Since"), h("dd", {}, `${clock(s.since)} (${ago(s.since)})`)] : null,
        s && s.until ? [h("dt", {}, "Until"), h("dd", {}, `${clock(s.until)} (${ago(s.until)})`)] : null,
        h("dt", {}, "MACs"), h("dd", { class: "mono" }, x.macs.join(", ")),
        h("dt", {}, "Arch"), h("dd", {}, x.arch || "unknown"),
        Object.keys(x.labels || {}).length ? [h("dt", {}, "Labels"), h("dd", {}, Object.entries(x.labels).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`)))] : null));
  }

  function renderWorkflow() {
    const wf = m.status && m.status.workflow;
    if (!wf) {
      mount(workflowBox, h("h2", { id: "h-workflow" }, "Workflow"), h("p", { class: "empty" }, "No workflow has run on this machine."));
      return;
    }
    const progress = wf.progress || {};
    mount(workflowBox,
      h("h2", { id: "h-workflow" }, "Workflow ", h("span", { class: "muted" }, wf.name)),
      h("p", {}, h("span", { class: `wf ${wf.state}`, id: "workflow-state" }, wf.state),
        ` requested by ${wf.created_by} ${ago(wf.created_at)}`, wf.queue ? `; place ${wf.queue.position} in the queue (${wf.queue.waiting_for})` : ""),
      wf.error ? h("p", { class: "error" }, wf.error) : null,
      h("table", { class: "steps" },
        h("thead", {}, h("tr", {}, ["Step", "State", "Tries", "Took", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, wf.steps.map((s) => {
          const p = progress[s.name];
          // The engine leaves the rate out of a report that came right after
          // another; the last one known still holds.
          const rateKey = `${wf.id}/${s.name}`;
          if (p && !p.rate) {
            const prev = m.rates[rateKey];
            const secs = prev ? (Date.parse(p.at) - prev.at) / 1000 : 0;
            if (prev && secs > 0 && p.done >= prev.done) p.rate = (p.done - prev.done) / secs;
            else if (prev) p.rate = prev.rate;
          }
          if (p) m.rates[rateKey] = { done: p.done, at: Date.parse(p.at), rate: p.rate };
          const shownRate = p && p.rate;
          const took = s.started_at ? (s.finished_at ? Date.parse(s.finished_at) : Date.now()) - Date.parse(s.started_at) : null;
          return h("tr", { class: `step ${s.state}`, dataset: { step: s.name } },
            h("td", {}, s.name),
            h("td", {}, s.state),
            h("td", {}, s.attempts || ""),
            h("td", {}, took === null ? "" : duration(took)),
            h("td", {},
              p ? h("div", { class: "live-progress" },
                p.total ? h("progress", { max: p.total, value: p.done }) : null,
                h("span", { class: "bytes" }, `${bytes(p.done)}${p.total ? ` of ${bytes(p.total)}` : ""}`),
                shownRate ? h("span", { class: "rate" }, ` at ${rate(shownRate)}`) : null,
                p.message ? h("span", { class: "muted" }, ` ${p.message}`) : null) : null,
              s.waiting_for && s.state !== "succeeded" ? h("div", { class: "muted" }, s.waiting_for) : null,
              s.error ? h("div", { class: "error" }, s.error) : null));
        }))));
  }

  function renderChart() {
    const all = sessions(m.events);
    if (!all.length) {
      mount(chartBox, h("h2", { id: "h-timeline" }, "Boot timeline"), h("p", { class: "empty" }, "No events yet: the chart grows as the machine boots."));
      return;
    }
    const index = m.session < 0 || m.session >= all.length ? all.length - 1 : m.session;
    const chosen = all[index];
    const model = buildTimeline(chosen);
    const width = Math.max(chartBox.clientWidth - 24, 320);
    const picker = all.length > 1 ? h("label", {}, "Boot ", h("select", {
      onchange: (e) => { const v = Number(e.target.value); m.session = v === all.length - 1 ? -1 : v; renderChart(); },
    }, all.map((s, i) => h("option", { value: i, selected: i === index }, `${dateTime(s[0].at)} (${s.length} events)`)))) : null;
    mount(chartBox,
      h("h2", { id: "h-timeline" }, "Boot timeline"),
      h("p", { class: "muted" }, `${dateTime(chosen[0].at)}: ${chosen.length} events over ${duration(model.end - model.start)}. `, picker),
      h("div", { class: "chart", id: "timeline-chart", dataset: { items: model.items.length, events: chosen.length } }, renderTimeline(model, width)));
  }

  function renderFailures() {
    const x = m.machine;
    if (!x) return;
    const failedSteps = (m.status && m.status.workflow ? m.status.workflow.steps : []).filter((s) => s.error);
    const logs = m.events.filter((e) => e.kind === "agent_log");
    const lastLog = logs[logs.length - 1];
    const bad = m.events.filter((e) => ["workflow_failed", "step_failed", "power_action_failed", "agent_lost", "tftp_failed"].includes(e.kind)).slice(-5);
    if (!FAILED_STATES.has(x.state) && !failedSteps.length && !bad.length && !lastLog) {
      mount(failBox);
      failBox.hidden = true;
      return;
    }
    failBox.hidden = false;
    mount(failBox, h("h2", { id: "h-failures" }, "Failures and agent log"),
      FAILED_STATES.has(x.state) ? h("p", { class: "error" }, `${stateLabel(x.state)}: ${x.state_reason || "no reason recorded"}`) : null,
      failedSteps.length ? h("ul", {}, failedSteps.map((s) => h("li", {}, h("strong", {}, s.name), `: ${s.error}`))) : null,
      bad.length ? h("ul", { class: "events-mini" }, bad.map((e) => h("li", {}, `${clock(e.at)} `, e.message))) : null,
      lastLog ? [h("h3", {}, `Agent log, ${dateTime(lastLog.at)} (${bytes(lastLog.data.bytes)}${lastLog.data.file ? `, kept in ${lastLog.data.file}` : ""})`),
        h("pre", { class: "log", tabindex: 0 }, lastLog.data.tail || "")] : null);
  }

  function renderFacts() {
    const f = m.machine.facts;
    if (!f) {
      mount(factsBox, h("h2", { id: "h-facts" }, "Hardware"), h("p", { class: "empty" }, "Not inspected yet."));
      return;
    }
    mount(factsBox, h("h2", { id: "h-facts" }, "Hardware ", h("span", { class: "muted" }, ago(m.machine.facts_at))),
      h("dl", {},
        h("dt", {}, "CPU"), h("dd", {}, `${f.cpu.model || f.cpu.arch} (${f.cpu.sockets} socket, ${f.cpu.cores} cores, ${f.cpu.threads} threads)`),
        h("dt", {}, "Memory"), h("dd", {}, bytes(f.memory_bytes)),
        h("dt", {}, "System"), h("dd", {}, [f.dmi.vendor, f.dmi.product, f.dmi.serial && `serial ${f.dmi.serial}`].filter(Boolean).join(", ") || "unknown"),
        h("dt", {}, "Firmware"), h("dd", {}, `${f.boot.mode}${f.boot.secure_boot ? ", Secure Boot" : ""}`)),
      h("h3", {}, "Disks"),
      h("table", { class: "compact" }, h("thead", {}, h("tr", {}, ["Disk", "Size", "Kind", "Model"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, f.disks.map((d) => h("tr", {}, h("td", { class: "mono" }, d.name), h("td", {}, bytes(d.size_bytes)),
          h("td", {}, d.rotational ? "HDD" : "SSD"), h("td", {}, d.model || ""))))),
      h("h3", {}, "NICs"),
      h("table", { class: "compact" }, h("thead", {}, h("tr", {}, ["NIC", "MAC", "Link", "Driver"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, f.nics.map((n) => h("tr", {}, h("td", { class: "mono" }, n.name), h("td", { class: "mono" }, n.mac),
          h("td", {}, n.link_up === false ? "down" : n.speed_mbps ? `${n.speed_mbps} Mb/s` : n.link_up ? "up" : ""), h("td", {}, n.driver || ""))))));
  }

  function renderPower() {
    const x = m.machine;
    if (!x) return;
    if (!x.bmc) {
      mount(powerBox, h("h2", { id: "h-power" }, "BMC and power"), h("p", { class: "empty" }, "No BMC: this machine is powered by hand."));
      return;
    }
    mount(powerBox, h("h2", { id: "h-power" }, "BMC and power"),
      h("dl", {},
        h("dt", {}, "Power"), h("dd", { id: "power-state" },
          m.power ? h("span", { class: `power ${m.power}` }, m.power) : m.powerError ? h("span", { class: "error" }, m.powerError) : "reading…"),
        h("dt", {}, "BMC"), h("dd", { class: "mono" }, x.bmc.address),
        h("dt", {}, "User"), h("dd", {}, x.bmc.username)),
      button("Read power state", () => loadPower(), { class: "quiet" }));
  }

  function renderEvents() {
    const recent = m.events.slice(-40).reverse();
    mount(eventsBox, h("h2", { id: "h-events" }, "Recent events ", h("a", { href: `#/events?machine=${enc(ref)}`, class: "muted" }, "all")),
      h("table", { class: "events compact" },
        h("thead", {}, h("tr", {}, ["Time", "Kind", "Message"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, recent.map((e) => h("tr", { class: e.kind.includes("fail") ? "bad" : "" },
          h("td", { class: "mono", title: e.at }, clock(e.at)), h("td", {}, e.kind), h("td", {}, e.message))))));
  }

  const reload = debounce(() => loadMachine().then(() => renderFailures()), 400);
  const redraw = debounce(() => { renderChart(); renderEvents(); renderFailures(); }, 250);
  const off = onEvent((e) => {
    const x = m.machine;
    if (!x) return;
    const mine = e.machine === x.id || (e.mac && x.macs.includes(e.mac));
    if (!mine) return;
    if (!m.events.some((o) => o.id === e.id)) m.events.push(e);
    redraw();
    if (RELOAD_KINDS.has(e.kind)) reload();
    if (e.kind === "power_action_done" && e.data && e.data.final_state) {
      m.power = e.data.final_state;
      renderPower();
    } else if (e.kind === "power_changed" && e.data && e.data.state) {
      m.power = e.data.state;
      renderPower();
    }
  });
  // Byte counts move faster than progress events (one per 5 s): poll while a step runs.
  const poll = setInterval(() => {
    const wf = m.status && m.status.workflow;
    if (alive && wf && (wf.state === "running" || wf.state === "queued")) reload();
  }, 2000);
  // Redrawn when the width changes (not the height, which the chart itself sets).
  let drawnWidth = 0;
  const resize = new ResizeObserver(debounce(() => {
    if (chartBox.clientWidth !== drawnWidth) {
      drawnWidth = chartBox.clientWidth;
      renderChart();
    }
  }, 200));
  resize.observe(chartBox);

  (async () => {
    try { m.images = await get("/images"); } catch { m.images = []; }
    if (await loadMachine()) {
      await loadEvents().catch((e) => mount(chartBox, h("p", { class: "error" }, e.message)));
      loadPower();
    }
  })();
  return () => {
    alive = false;
    off();
    clearInterval(poll);
    resize.disconnect();
  };
}

// The installed system's network when the operator gives none: the machine's
// name as host name, DHCP on its boot NIC.
export function defaultNetwork(machine) {
  return { hostname: machine.name, nics: [{ mac: machine.macs[0], ipv4: { mode: "dhcp" } }] };
}
