// The room dashboard page: renders the server-sent snapshot and sends play/stop/panic.
// Everything from the room is put in with textContent, never as HTML: device ids and
// topics arrive over MQTT and must not be able to inject markup.
"use strict";

const $ = (id) => document.getElementById(id);

const CUE_STATES = {
  waiting: ["·", "waiting"],
  pending: ["…", "awaiting OK"],
  ok: ["✓", "OK"],
  error: ["✗", "ERROR"],
  timeout: ["✗", "TIMEOUT"],
  failed: ["✗", "NOT SENT"],
  cancelled: ["–", "cancelled"],
  "no-feedback": ["–", "no feedback"],
};

const NEUTRAL_OUTCOMES = ["running", "stopped", "shutdown"];

const page = {
  timezone: undefined,  // the room's, from the snapshot
  scene: null,          // the scene part of the last snapshot
  receivedAt: 0,        // performance.now() when it arrived
  events: null,
  session: null,
  sceneChosen: false,   // someone picked a scene in the list: keep their choice
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function replaceChildren(parent, children, emptyText) {
  parent.replaceChildren(...children);
  if (children.length === 0 && emptyText) {
    const li = el("li", "empty", emptyText);
    parent.append(li);
  }
}

function formatTime(iso, withDay) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const options = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDay) Object.assign(options, { weekday: "short", day: "numeric", month: "short" });
  try {
    return new Intl.DateTimeFormat(undefined, { ...options, timeZone: page.timezone }).format(date);
  } catch (e) {  // an unknown zone name in this browser: its own zone is the best left
    return new Intl.DateTimeFormat(undefined, options).format(date);
  }
}

function sameDay(iso) {
  const fmt = (d) => new Intl.DateTimeFormat("en-CA", { timeZone: page.timezone }).format(d);
  try { return fmt(new Date(iso)) === fmt(new Date()); } catch (e) { return false; }
}

function formatOffset(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  const rest = s - m * 60;
  return `${m}:${rest.toFixed(1).padStart(4, "0")}`;
}

function setBadge(node, cls, text) {
  node.className = `badge ${cls}`;
  node.textContent = text;
}

function renderStatus(status) {
  if (!status || status.error) return;
  page.timezone = status.timezone || undefined;
  $("room").textContent = `Room ${status.room}`;
  document.title = `${status.room} · room dashboard`;
  const broker = status.broker || {};
  if (broker.connected) {
    setBadge($("broker"), "ok", "Broker: connected");
  } else {
    setBadge($("broker"), "bad", "Broker: NOT connected");
  }
  $("broker").title = broker.address ? `broker ${broker.address}` : "";
}

function renderDevices(part) {
  if (!part || part.error) return;
  const items = part.devices.map((d) => {
    const li = el("li");
    li.dataset.device = d.id;
    li.append(el("span", `badge ${d.online ? "ok" : "bad"}`, d.online ? "ONLINE" : "OFFLINE"));
    li.append(el("span", "name", d.id));
    // An online device's presence message may be hours old while it answers every cue:
    // what staff need then is since when it is up; for one that is gone, when it was.
    li.append(el("span", "when", d.online
      ? `online since ${formatTime(d.since, !sameDay(d.since))}`
      : `last seen ${formatTime(d.last_seen, !sameDay(d.last_seen))}`));
    return li;
  });
  const online = part.devices.filter((d) => d.online).length;
  $("device-count").textContent = `(${online} of ${part.devices.length} online)`;
  replaceChildren($("devices"), items, "No device has reported yet.");
}

function renderScene(scene) {
  page.scene = scene && !scene.error ? scene : null;
  page.receivedAt = performance.now();
  const playing = page.scene && page.scene.playing;
  $("timeline").hidden = !playing;
  if (!playing) {
    $("scene-name").textContent = "Nothing is playing.";
    $("scene-time").textContent = "";
    $("next-cue").textContent = "";
    replaceChildren($("cues"), []);
    $("cue-marks").replaceChildren();
    return;
  }
  $("scene-name").textContent = `${scene.name} (${scene.scene})`;
  const duration = scene.duration || 0;
  const marks = scene.cues.map((cue) => {
    const mark = el("div", `cue-mark st-${cue.state}`);
    mark.style.left = `${duration > 0 ? Math.min(100, (cue.at / duration) * 100) : 0}%`;
    mark.title = `${formatOffset(cue.at)} ${cue.label || cue.topic}: ${CUE_STATES[cue.state]?.[1] || cue.state}`;
    mark.dataset.state = cue.state;
    return mark;
  });
  $("cue-marks").replaceChildren(...marks);
  const items = scene.cues.map((cue) => {
    const li = el("li");
    li.dataset.index = cue.index;
    li.dataset.state = cue.state;
    li.append(el("span", "at", formatOffset(cue.at)));
    const what = el("span", "what");
    const thing = String(cue.topic).split("/").pop();
    what.append(el("span", null, cue.label || `${thing} ${cue.message}`));
    what.append(el("div", "topic", `${cue.topic} ${cue.message}`));
    li.append(what);
    const [symbol, word] = CUE_STATES[cue.state] || ["?", cue.state];
    const latency = cue.state === "ok" && typeof cue.latency === "number"
      ? ` ${cue.latency.toFixed(2)}s` : "";
    li.append(el("span", `state st-${cue.state}`, `${symbol} ${word}${latency}`));
    return li;
  });
  replaceChildren($("cues"), items);
  tick();
}

function renderFailures(part) {
  if (!part || part.error) return;
  const items = part.failures.map((f) => {
    const li = el("li");
    li.append(el("span", "badge bad", f.status));
    li.append(el("span", "name", `${f.topic} ${f.message}`));
    if (f.device) li.append(el("span", "muted", f.device));
    li.append(el("span", "when", formatTime(f.time, !sameDay(f.time))));
    return li;
  });
  replaceChildren($("failures"), items, "No failures.");
}

function renderShows(part) {
  if (!part || part.error) return;
  const items = part.shows.map((s) => {
    const li = el("li");
    li.append(el("span", "name", s.scene));
    li.append(el("span", "muted", s.rule));
    li.append(el("span", "when", s.next ? formatTime(s.next, true) : "never"));
    return li;
  });
  replaceChildren($("shows"), items, "No shows are scheduled.");
}

function renderRuns(part) {
  if (!part || part.error) return;
  const items = part.runs.map((r) => {
    const li = el("li");
    const outcome = r.outcome || "?";
    // Red is for what went wrong; a run someone stopped, or the service stopping, is grey.
    const tone = outcome === "completed" ? "ok"
      : NEUTRAL_OUTCOMES.includes(outcome) ? "unknown" : "bad";
    li.append(el("span", `badge ${tone}`, outcome));
    li.append(el("span", "name", r.name || r.scene || r.scene_id || "?"));
    if (r.trigger) li.append(el("span", "muted", r.trigger));
    const failures = typeof r.failure_count === "number" ? r.failure_count
      : Array.isArray(r.failures) ? r.failures.length : r.failures;
    if (failures) li.append(el("span", "muted", `${failures} failed`));
    li.append(el("span", "when", formatTime(r.started_at, true)));
    return li;
  });
  replaceChildren($("runs"), items, "No runs yet.");
}

// Until someone picks a scene, the list shows the one playing (else the last one run),
// so that Play after Stop starts that again, not whichever scene sorts first.
function renderScenes(part, current) {
  if (!part || part.error) return;
  const select = $("scene-select");
  const chosen = page.sceneChosen || !current ? select.value : current;
  const options = part.scenes.map((s) => {
    const opt = el("option", null, `${s.name} (${s.id})`);
    opt.value = s.id;
    return opt;
  });
  select.replaceChildren(...options);
  if (part.scenes.some((s) => s.id === chosen)) select.value = chosen;
}

function currentScene(snapshot) {
  const scene = snapshot.scene;
  if (scene && !scene.error && scene.playing) return scene.scene;
  const runs = snapshot.history && Array.isArray(snapshot.history.runs) ? snapshot.history.runs : [];
  return runs.length ? runs[0].scene : null;
}

function render(snapshot) {
  renderStatus(snapshot.status);
  renderDevices(snapshot.devices);
  renderScene(snapshot.scene);
  renderFailures(snapshot.failures);
  renderShows(snapshot.shows);
  renderRuns(snapshot.history);
  renderScenes(snapshot.scenes, currentScene(snapshot));
}

// The playhead moves locally between snapshots: a snapshot comes only when something changes.
function tick() {
  const scene = page.scene;
  $("clock").textContent = formatTime(new Date().toISOString());
  if (!scene || !scene.playing) return;
  const duration = scene.duration || 0;
  let position = (scene.elapsed || 0) + (performance.now() - page.receivedAt) / 1000;
  if (duration > 0) position = Math.min(position, duration);
  const pct = duration > 0 ? (position / duration) * 100 : 0;
  $("playhead").style.left = `${pct}%`;
  $("progress").style.width = `${pct}%`;
  $("scene-time").textContent = `${formatOffset(position)} of ${formatOffset(duration)}` +
    (scene.rounds !== 1 ? ` · round ${scene.round}${scene.rounds ? ` of ${scene.rounds}` : ""}` : "");
  const next = scene.cues.find((c) => c.state === "waiting" && c.at >= position - 0.05);
  if (next) {
    const inSeconds = Math.max(0, Math.ceil(next.at - position));
    $("next-cue").textContent =
      `Next cue: ${next.label || `${next.topic} ${next.message}`} at ${formatOffset(next.at)} (in ${inSeconds} s)`;
  } else {
    $("next-cue").textContent = "No more cues in this round.";
  }
  for (const li of $("cues").children) {
    const cue = scene.cues[Number(li.dataset.index)];
    li.classList.toggle("current", Boolean(next && cue && cue.index === next.index));
  }
}

function animate() {
  tick();
  window.requestAnimationFrame(animate);
}

function showMessage(text, ok) {
  const node = $("control-message");
  node.textContent = text;
  node.className = `message ${ok ? "ok" : "bad"}`;
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  return { ok: response.ok, status: response.status, data };
}

async function control(path, body, doneText) {
  try {
    const result = await postJSON(path, body);
    if (result.ok) {
      showMessage(doneText, true);
    } else {
      showMessage(result.data.error || `Refused (HTTP ${result.status}).`, false);
      if (result.status === 401) refreshSession();
    }
  } catch (e) {
    showMessage("The dashboard cannot be reached; is `runner serve` running?", false);
  }
}

function renderSession(session) {
  page.session = session;
  const loginForm = $("login-form");
  loginForm.hidden = session.authorized || !session.token_configured;
  $("logout").hidden = !session.authorized;
  if (!session.token_configured) {
    $("login-state").textContent =
      "Control is disabled: no dashboard token is configured (dashboard.token in runner.yaml).";
  } else {
    $("login-state").textContent = session.authorized ? "Logged in: you can play, stop and panic."
      : "Log in with the dashboard token to play, stop and panic.";
  }
  const refused = $("read-refused");
  refused.hidden = session.reads_allowed;
  refused.textContent = session.reads_allowed ? "" :
    "This dashboard shows the room only to logged-in staff from this address: log in below.";
  if (session.reads_allowed) startEvents();
}

async function refreshSession() {
  try {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    renderSession(await response.json());
  } catch (e) {
    setBadge($("live"), "bad", "Dashboard unreachable");
  }
}

function startEvents() {
  if (page.events) return;
  const events = new EventSource("/api/events");
  page.events = events;
  events.addEventListener("open", () => setBadge($("live"), "ok", "Live"));
  events.addEventListener("error", () => setBadge($("live"), "bad", "Reconnecting…"));
  events.addEventListener("snapshot", (event) => {
    setBadge($("live"), "ok", "Live");
    render(JSON.parse(event.data));
  });
}

function setup() {
  $("scene-select").addEventListener("change", () => { page.sceneChosen = true; });
  $("play").addEventListener("click", () => {
    const scene = $("scene-select").value;
    if (!scene) { showMessage("Choose a scene first.", false); return; }
    control("/api/play", { scene }, `Playing ${scene}.`);
  });
  $("stop").addEventListener("click", () => control("/api/stop", {}, "Stopped; safe state sent."));
  $("panic").addEventListener("click", () => control("/api/panic", {}, "PANIC: safe state sent."));
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("token");
    const result = await postJSON("/api/login", { token: input.value });
    input.value = "";
    if (result.ok) showMessage("Logged in.", true);
    else showMessage(result.data.error || `Login refused (HTTP ${result.status}).`, false);
    refreshSession();
  });
  $("logout").addEventListener("click", async () => {
    await postJSON("/api/logout", {});
    if (page.events) {  // a remote reader may not keep watching once logged out
      page.events.close();
      page.events = null;
    }
    showMessage("Logged out.", true);
    refreshSession();
  });
  refreshSession();
  animate();
}

document.addEventListener("DOMContentLoaded", setup);
