// Numbers, sizes, times and states for people.

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function rate(bytesPerSec) {
  return bytesPerSec ? `${bytes(bytesPerSec)}/s` : "";
}

// Milliseconds as "850 ms", "12.3 s", "4m 05s", "2h 10m".
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function ago(iso) {
  if (!iso) return "";
  const ms = Date.now() - Date.parse(iso);
  return ms < 0 ? `in ${duration(-ms)}` : `${duration(ms)} ago`;
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false });
}

export function dateTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString([], { hour12: false })}`;
}

export const FAILED_STATES = new Set([
  "verify_failed", "inspect_failed", "clean_failed", "deploy_failed", "undeploy_failed", "rescue_failed",
]);
export const BUSY_STATES = new Set([
  "verifying", "inspecting", "cleaning", "deploying", "undeploying", "rescuing",
]);
export const ALL_STATES = [
  "enrolled", "verifying", "verify_failed", "manageable", "inspecting", "inspect_failed",
  "cleaning", "clean_failed", "available", "deploying", "deploy_failed", "active",
  "undeploying", "undeploy_failed", "rescuing", "rescue_failed", "rescue",
];

// The CSS class of a lifecycle state's badge.
export function stateClass(state) {
  if (FAILED_STATES.has(state)) return "state failed";
  if (BUSY_STATES.has(state)) return "state busy";
  if (state === "active") return "state ok";
  if (state === "available" || state === "manageable") return "state ready";
  return "state";
}

export function stateLabel(state) {
  return (state || "").replaceAll("_", " ");
}

export function intentLabel(intent) {
  if (!intent) return "";
  switch (intent.kind) {
    case "profile":
      return intent.name ? `profile ${intent.name}` : "profile chosen by selectors";
    case "local_disk":
      return "local disk";
    case "menu":
      return `menu (${(intent.entries || []).length} entries)`;
    case "install":
      return `install ${intent.os}`;
    case "agent":
      return "deploy agent (RAM-disk)";
    case "discover":
      return "discover";
    default:
      return intent.kind;
  }
}
