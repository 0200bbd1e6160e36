// The dashboard's shell: sign-in, navigation, the live indicator and the
// page router (#/, #/machines/NAME, #/catalog, #/leases, #/events).

import { h, mount, toast } from "./dom.js";
import { token, setToken, signIn, session } from "./api.js";
import { live, start as startLive, stop as stopLive, drop as dropLive, onStatus } from "./live.js";
import { fleetPage } from "./fleet.js";
import { machinePage } from "./machine.js";
import { catalogPage } from "./catalog.js";
import { leasesPage, eventsPage } from "./lists.js";

// For people debugging and for the browser tests: the stream's state, and a
// way to drop it as a network failure would.
window.rackboot = { live, session, dropLive, stopLive, startLive };

const PAGES = [
  [/^\/?$/, fleetPage, "fleet"],
  [/^\/machines\/([^/]+)$/, machinePage, "fleet"],
  [/^\/catalog$/, catalogPage, "catalog"],
  [/^\/leases$/, leasesPage, "leases"],
  [/^\/events$/, eventsPage, "events"],
];

const NAV = [["#/", "Fleet", "fleet"], ["#/catalog", "Catalog", "catalog"], ["#/leases", "Leases", "leases"], ["#/events", "Events", "events"]];

let leave = null;
let signedIn = false;

function route() {
  const hash = location.hash || "#/";
  // "#main" (the skip link) is not a page.
  if (!hash.startsWith("#/")) return;
  if (!signedIn) return;
  if (leave) {
    leave();
    leave = null;
  }
  const path = hash.slice(1).split("?")[0];
  const main = document.getElementById("main");
  for (const [re, page, section] of PAGES) {
    const m = path.match(re);
    if (!m) continue;
    renderNav(section);
    leave = page(main, ...m.slice(1).map(decodeURIComponent)) || null;
    main.focus({ preventScroll: true });
    return;
  }
  renderNav("");
  mount(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Go to the fleet")));
}

function renderNav(current) {
  mount(document.getElementById("nav"), NAV.map(([href, label, section]) =>
    h("a", { href, "aria-current": section === current ? "page" : null }, label)));
  mount(document.getElementById("who"),
    h("span", { class: "muted", id: "who-name" }, `${session.name} (${session.role})`), " ",
    h("button", { type: "button", class: "quiet", onclick: signOut }, "Sign out"));
}

function signInForm(message) {
  signedIn = false;
  mount(document.getElementById("nav"));
  mount(document.getElementById("who"));
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = h("form", { class: "signin", id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      await enter();
    } catch (err) {
      setToken(null);
      signInForm(err.status === 401 ? "That token was refused." : err.message);
    }
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste an API token: ", h("code", {}, "STATE_DIR/admin-token"), ", or one from ", h("code", {}, "rackboot token create"), ". It is kept in this tab only."),
  h("label", { for: "token" }, "API token"), input,
  h("button", { type: "submit" }, "Sign in"), error);
  mount(document.getElementById("main"), form);
  input.focus();
}

async function enter() {
  await signIn();
  signedIn = true;
  startLive();
  if (!location.hash.startsWith("#/")) location.hash = "#/";
  route();
}

function signOut() {
  setToken(null);
  stopLive();
  if (leave) {
    leave();
    leave = null;
  }
  signInForm("");
}

window.addEventListener("rackboot:signed-out", () => {
  if (!signedIn) return;
  setToken(null);
  stopLive();
  signInForm("The server refused the token (revoked or expired): sign in again.");
});
window.addEventListener("hashchange", route);

onStatus((s) => {
  const el = document.getElementById("live");
  if (!el) return;
  el.className = `live ${s.connected ? "on" : "off"}`;
  el.textContent = s.connected ? "live" : signedIn ? "reconnecting…" : "";
  el.title = s.lastId === null ? "" : `last event ${s.lastId}`;
});

(async () => {
  if (!token()) {
    signInForm("");
    return;
  }
  try {
    await enter();
  } catch (e) {
    setToken(null);
    signInForm(e.message);
    toast(e.message, "error");
  }
})();
