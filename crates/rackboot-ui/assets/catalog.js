// Catalog: OS trees, images, install templates (viewed, and uploaded by
// admins with the server's validation errors shown), profiles and selectors.

import { h, mount, button, toast } from "./dom.js";
import { get, put, enc, canAdmin } from "./api.js";
import { bytes, dateTime, duration } from "./format.js";

const FAMILIES = ["debian", "ubuntu", "rhel", "suse", "esxi", "windows"];

function table(columns, rows, attrs = {}) {
  if (!rows.length) return h("p", { class: "empty" }, "None.");
  return h("div", { class: "table-wrap" }, h("table", attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

async function section(box, title, load, render) {
  mount(box, h("h2", {}, title), h("p", { class: "muted" }, "loading…"));
  try {
    const data = await load();
    mount(box, h("h2", {}, title, " ", h("span", { class: "muted" }, `(${data.length})`)), render(data));
  } catch (e) {
    mount(box, h("h2", {}, title), h("p", { class: e.status === 404 ? "muted" : "error" }, e.message));
  }
}

export function catalogPage(main) {
  const os = h("section", { class: "panel wide", id: "catalog-os" });
  const images = h("section", { class: "panel wide", id: "catalog-images" });
  const templates = h("section", { class: "panel wide", id: "catalog-templates" });
  const profiles = h("section", { class: "panel wide", id: "catalog-profiles" });
  const selectors = h("section", { class: "panel wide", id: "catalog-selectors" });
  mount(main, h("h1", {}, "Catalog"),
    h("nav", { class: "jump", "aria-label": "Catalog sections" },
      [["catalog-os", "OS trees"], ["catalog-images", "Images"], ["catalog-templates", "Templates"], ["catalog-profiles", "Profiles"], ["catalog-selectors", "Selectors"]]
        .map(([id, label]) => h("button", { type: "button", class: "quiet", onclick: () => document.getElementById(id).scrollIntoView() }, label))),
    h("div", { class: "grid" }, os, images, templates, profiles, selectors));

  section(os, "OS trees", () => get("/os"), (list) =>
    table(["Id", "Name", "Family", "Arch", "Installer"], list.map((o) => [o.id, o.name, o.family, o.arch, h("span", { class: "mono" }, `${o.kernel} + ${o.initrd}`)])));
  section(images, "Images", () => get("/images"), (list) =>
    table(["Name", "OS", "Size", "Stored", "Imported", "sha256"], list.map((i) => [
      i.name, `${i.os_family || ""}${i.cloud_init ? " (cloud-init)" : ""}`, bytes(i.raw_size), bytes(i.compressed_size),
      `${dateTime(i.imported_at)} in ${duration(i.import_millis)}`, h("span", { class: "mono", title: i.sha256 }, `${i.sha256.slice(0, 12)}…`)])));
  const loadTemplates = () => section(templates, "Templates", () => get("/templates"), (list) => [
    table(["Name", "Family", "Description", "Updated", ""], list.map((t) => [
      t.name, t.family, t.description, dateTime(t.updated_at),
      button("View", async () => showTemplate(t.name), { class: "quiet" })])),
    canAdmin() ? uploadForm(loadTemplates) : null,
    h("div", { id: "template-view" })]);
  loadTemplates();
  section(profiles, "Profiles", () => get("/profiles"), (list) =>
    table(["Name", "Kernel", "Initrds", "Command line", "Loader"], list.map((p) => [
      p.name, h("span", { class: "mono" }, p.kernel || (p.ipxe_script ? "iPXE script" : "")), h("span", { class: "mono" }, (p.initrds || []).join(" ")),
      h("span", { class: "mono" }, p.cmdline), p.loader || ""])));
  section(selectors, "Selectors", () => get("/selectors"), (list) =>
    table(["Name", "Profile", "Matches"], list.map((s) => [
      s.name, s.profile, Object.entries(s.match || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))])));
  return null;
}

async function showTemplate(name) {
  const box = document.getElementById("template-view");
  try {
    const t = await get(`/templates/${enc(name)}`);
    mount(box, h("h3", {}, `${t.name} (${t.family})`), h("pre", { class: "source", tabindex: 0 }, t.source));
    box.scrollIntoView();
  } catch (e) {
    mount(box, h("p", { class: "error" }, e.message));
  }
}

function uploadForm(reload) {
  const name = h("input", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9._-]*", placeholder: "site-preseed" });
  const family = h("select", { name: "family" }, FAMILIES.map((f) => h("option", { value: f }, f)));
  const description = h("input", { name: "description", placeholder: "what it is for" });
  const source = h("textarea", { name: "source", rows: 10, spellcheck: "false", placeholder: "{# minijinja template #}" });
  const file = h("input", { type: "file", "aria-label": "Read the source from a file", onchange: async (e) => {
    const f = e.target.files[0];
    if (f) {
      source.value = await f.text();
      if (!name.value) name.value = f.name.replace(/\.[^.]*$/, "").toLowerCase().replace(/[^a-z0-9._-]/g, "-");
    }
  } });
  const result = h("div", { class: "result", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "upload", id: "template-upload", onsubmit: async (e) => {
    e.preventDefault();
    mount(result);
    try {
      await put(`/templates/${enc(name.value.trim())}`, { family: family.value, description: description.value, source: source.value });
      toast(`template ${name.value} stored`, "ok");
      reload();
    } catch (err) {
      // The server checked it (parsed and rendered for a sample machine) and says where it fails.
      mount(result, h("p", { class: "error", role: "alert", id: "template-error" }, `Refused: ${err.message}`));
    }
  } },
  h("h3", {}, "Upload a template"),
  h("div", { class: "row" }, h("label", {}, "Name ", name), h("label", {}, "Family ", family), h("label", {}, "Description ", description)),
  h("label", {}, "Source ", file), source,
  h("div", { class: "row" }, h("button", { type: "submit" }, "Check and store")), result);
  return form;
}
