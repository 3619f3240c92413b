// reelsmith's page: the submit form, the job list (live from /api/events/stream) and a job page
// (live from /api/jobs/:id/events/stream). Plain script, no build step, nothing from outside the
// daemon. Streams reconnect by themselves (EventSource resumes after the last id it saw); while
// the daemon is unreachable a banner says so and a probe of /healthz brings the page back. When the
// daemon has an API token (server.api_token), a 401 locks the page behind a token form; the token is
// kept in localStorage (this origin's only) and sent as `Authorization: Bearer` by fetch. For what the
// browser fetches by itself (EventSource, <video>, download links: GETs only) the page asks the
// daemon for its session cookie (POST /api/session), which no script can read.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const TERMINAL_TYPES = new Set(["complete", "error", "cancelled"]);
// Where each stage sits on the overall bar (render fills its span from `progress` events).
const STAGES = {
  script: [0, 8, "Writing the script"],
  footage: [8, 18, "Finding footage"],
  voice: [18, 28, "Recording the voiceover"],
  music: [28, 30, "Adding music"],
  subtitles: [30, 32, "Timing the subtitles"],
  render: [32, 96, "Rendering"],
  metadata: [96, 99, "Writing title and description"],
  upload: [99, 100, "Uploading"],
};

const jobs = new Map(); // id -> job JSON

// Answers can arrive out of order: a job's JSON replaces what is shown only when it is at least as
// new (its lastEventId), so a slow early answer never puts a finished job back to running.
function newer(job, than) {
  return !than || typeof than.lastEventId !== "number" || job.lastEventId >= than.lastEventId;
}

function remember(job) {
  if (!newer(job, jobs.get(job.id))) return false;
  jobs.set(job.id, job);
  return true;
}
let current = null; // the job page's state: {id, es, lastId, job}
let listStream = null;
let online = null;
let probeTimer = null;
let locked = false; // the daemon refused this page's token (or it has none)

// ---------------------------------------------------------------- the API token

const TOKEN_KEY = "reelsmith.apiToken";

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || sessionToken;
  } catch (e) {
    return sessionToken;
  }
}

let sessionToken = ""; // the token of this page, when storage is refused (private mode)

function setToken(t) {
  sessionToken = t;
  try {
    if (t) localStorage.setItem(TOKEN_KEY, t);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (e) {
    /* private mode: kept for this page only */
  }
  $("forget").hidden = !t;
}

// Asks the daemon for the session cookie with token `t`: its answer's status, or 0 unanswered.
async function openSession(t) {
  try {
    const res = await fetch("/api/session", {
      method: "POST",
      cache: "no-store",
      headers: { Authorization: `Bearer ${t}` },
    });
    return res.status;
  } catch (e) {
    return 0;
  }
}

function withToken(headers) {
  const t = token();
  return t ? { ...headers, Authorization: `Bearer ${t}` } : headers;
}

// The daemon answered 401: stop the streams and ask for the token.
function lock(message) {
  const first = !locked;
  locked = true;
  if (listStream) listStream.close();
  if (current && current.es) current.es.close();
  const conn = $("conn");
  conn.textContent = "API token needed";
  conn.className = "conn locked";
  $("offline").hidden = true;
  $("main").hidden = true;
  $("auth").hidden = false;
  const err = $("auth-error");
  err.textContent = token() ? message : "";
  err.hidden = !token();
  if (first) $("token").focus();
}

async function unlock(e) {
  e.preventDefault();
  const err = $("auth-error");
  const t = $("token").value.trim();
  const say = (msg) => {
    err.textContent = msg;
    err.hidden = false;
    $("token").focus();
  };
  if (!t) {
    say("Enter the token: server.api_token in the daemon's config, or its REELSMITH_API_TOKEN.");
    return;
  }
  const status = await openSession(t);
  if (status === 0) {
    say("The daemon is not answering.");
    return;
  }
  if (status === 401) {
    say("The daemon refused this token: it is not its server.api_token.");
    return;
  }
  setToken(t);
  $("token").value = "";
  err.hidden = true;
  locked = false;
  $("auth").hidden = true;
  $("main").hidden = false;
  online = null;
  setOnline(true);
  loadModels();
  if (current && current.es) current.es.close();
  current = null;
  route();
}

// ---------------------------------------------------------------- HTTP

async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      cache: "no-store",
      headers: withToken(body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    setOnline(false);
    throw new Error("The daemon is not answering.");
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (res.status === 401) {
    const message = (data && data.message) || "The daemon asks for its API token.";
    lock(message);
    throw new Error(message);
  }
  if (!res.ok || (data && data.status === "error" && !data.models)) {
    throw new Error((data && data.message) || `HTTP ${res.status}`);
  }
  return data;
}

// ---------------------------------------------------------------- connection state

function setOnline(up) {
  if (up === online) return;
  online = up;
  if (locked && up) {
    $("offline").hidden = true;
    clearTimeout(probeTimer);
    probeTimer = null;
    return;
  }
  const conn = $("conn");
  conn.textContent = up ? "Live" : "Daemon unreachable, retrying…";
  conn.className = "conn " + (up ? "live" : "down");
  $("offline").hidden = up;
  $("submit").disabled = !up;
  if (up) {
    clearTimeout(probeTimer);
    probeTimer = null;
    loadJobs();
    if (current) refreshJob(current.id);
    ensureStreams();
  } else {
    // Nothing can be asked of a daemon that does not answer; refreshJob re-enables them.
    $("cancel").disabled = true;
    $("retry").disabled = true;
    $("offline-detail").textContent =
      `Nothing answers at ${location.origin}. This page keeps trying and reconnects by itself; ` +
      "jobs already queued stay in the daemon's log.";
    probe();
  }
}

function probe() {
  clearTimeout(probeTimer);
  probeTimer = setTimeout(async () => {
    try {
      const r = await fetch("/healthz", { cache: "no-store" });
      if (r.ok) {
        setOnline(true);
        return;
      }
    } catch (e) {
      /* still down */
    }
    probe();
  }, 1500);
}

function ensureStreams() {
  if (locked) return;
  if (!listStream || listStream.readyState === EventSource.CLOSED) openListStream();
  if (current && !TERMINAL.has(current.job && current.job.state) &&
      (!current.es || current.es.readyState === EventSource.CLOSED)) {
    openJobStream();
  }
}

// ---------------------------------------------------------------- job list

function stageLabel(job) {
  if (!job) return "";
  if (job.state === "queued") return "Waiting in the queue";
  if (job.state === "completed") return "Done";
  if (job.state === "failed") return "Failed";
  if (job.state === "cancelled") return "Cancelled";
  const s = STAGES[job.stage];
  return s ? s[2] : "Starting";
}

function overall(job) {
  if (!job) return 0;
  if (job.state === "completed") return 100;
  const s = STAGES[job.stage];
  if (!s) return 0;
  if (job.stage === "render" && typeof job.progress === "number") {
    return s[0] + (s[1] - s[0]) * job.progress;
  }
  return s[0];
}

function renderRow(job) {
  let li = document.querySelector(`#jobs li[data-id="${job.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.id = job.id;
    const a = document.createElement("a");
    a.href = `#/jobs/${job.id}`;
    const sub = document.createElement("div");
    sub.className = "sub";
    const badge = document.createElement("span");
    badge.className = "badge";
    const bar = document.createElement("progress");
    bar.max = 100;
    sub.append(badge, bar);
    li.append(a, sub);
    const list = $("jobs");
    // Newest first: insert before the first row created earlier.
    const later = [...list.children].find((c) => (jobs.get(c.dataset.id) || {}).createdAt < job.createdAt);
    list.insertBefore(li, later || null);
  }
  li.querySelector("a").textContent = job.subject || job.id;
  const badge = li.querySelector(".badge");
  badge.textContent = job.state;
  badge.className = "badge " + job.state;
  const bar = li.querySelector("progress");
  bar.value = overall(job);
  bar.setAttribute("aria-label", `${job.subject || "job"}: ${stageLabel(job)}, ${Math.round(overall(job))}%`);
  li.classList.toggle("current", !!current && current.id === job.id);
  $("jobs-empty").hidden = jobs.size > 0;
}

async function loadJobs() {
  try {
    const data = await api("GET", "/api/jobs?limit=100");
    for (const j of data.jobs.slice().reverse()) {
      if (remember(j)) renderRow(j);
    }
    $("jobs-empty").hidden = jobs.size > 0;
  } catch (e) {
    /* the banner tells */
  }
}

const pending = new Map();
function refreshSoon(id) {
  if (pending.has(id)) return;
  pending.set(id, setTimeout(async () => {
    pending.delete(id);
    try {
      const data = await api("GET", `/api/jobs/${id}`);
      if (remember(data.job)) renderRow(data.job);
      if (current && current.id === id) showJob(data.job);
    } catch (e) {
      /* retried on the next event or reconnect */
    }
  }, 120));
}

function openListStream() {
  if (listStream) listStream.close();
  listStream = new EventSource("/api/events/stream");
  listStream.onopen = () => setOnline(true);
  listStream.onerror = () => {
    if (listStream.readyState === EventSource.CLOSED) {
      streamRefused();
    } else {
      // Reconnecting: tell the person only if the daemon is really gone.
      fetch("/healthz", { cache: "no-store" }).then((r) => setOnline(r.ok), () => setOnline(false));
    }
  };
  listStream.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (!ev.jobId) return;
    const job = jobs.get(ev.jobId);
    if (ev.type === "progress" && job && ev.payload) {
      job.progress = ev.payload.progress;
      job.stage = "render";
      job.lastEventId = Math.max(job.lastEventId || 0, ev.id);
      renderRow(job);
      return;
    }
    refreshSoon(ev.jobId);
  };
}

// The list stream was answered with something else than a stream (a 401, a 503 at the connection
// cap): ask the API why. A 401 locks the page (in api()); anything else is treated as the daemon
// being away, whose probe reopens everything.
async function streamRefused() {
  if (locked) return;
  try {
    await api("GET", "/api/jobs?limit=1");
  } catch (e) {
    if (!locked) setOnline(false);
    return;
  }
  // The token is good: the stream lacked the session cookie (the daemon was down when the page
  // loaded, or the browser's session ended), so ask for it again.
  if (token()) await openSession(token());
  setTimeout(() => {
    loadJobs();
    ensureStreams();
  }, 1000);
}

// ---------------------------------------------------------------- job page

function fmtTime(ts) {
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function appendLog(ev) {
  const li = document.createElement("li");
  const level = ["info", "success", "warning", "error"].includes(ev.level) ? ev.level : "info";
  li.className = level;
  li.dataset.id = ev.id;
  li.dataset.type = ev.type;
  const t = document.createElement("time");
  t.dateTime = new Date(ev.timestamp * 1000).toISOString();
  t.textContent = fmtTime(ev.timestamp);
  const lvl = document.createElement("span");
  lvl.className = "lvl";
  lvl.textContent = level.toUpperCase();
  const msg = document.createElement("span");
  msg.textContent = ev.message;
  li.append(t, lvl, msg);
  const log = $("log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  log.append(li);
  if (stick) log.scrollTop = log.scrollHeight;
}

function setProgress(job) {
  const pct = overall(job);
  const bar = $("job-progress");
  bar.value = pct;
  bar.textContent = `${Math.round(pct)}%`;
  bar.dataset.progress = String(pct);
  let label = stageLabel(job);
  if (job.stage === "render" && job.state === "running" && typeof job.progress === "number") {
    label += ` · ${Math.round(job.progress * 100)}% of the render`;
  }
  $("job-stage").textContent = `${label} (${Math.round(pct)}% overall)`;
}

function showJob(job) {
  if (!current || current.id !== job.id || !newer(job, current.job)) return;
  current.job = job;
  $("job-title").textContent = job.subject || "Job";
  const st = $("job-state");
  st.textContent = job.state + (job.cancelRequested && !TERMINAL.has(job.state) ? " (cancelling)" : "");
  st.className = "badge " + job.state;
  const parts = [`attempt ${job.attempt || 0} of ${job.maxAttempts}`, `id ${job.id}`];
  $("job-meta").textContent = parts.join(" · ");
  setProgress(job);
  const cancel = $("cancel");
  cancel.disabled = TERMINAL.has(job.state) || job.cancelRequested;
  $("retry").disabled = !(job.state === "failed" || job.state === "cancelled");
  const err = $("job-error");
  err.hidden = !job.errorMessage || job.state === "completed";
  err.textContent = job.errorMessage || "";
  const result = $("result");
  if (job.state === "completed") {
    const base = `/api/jobs/${job.id}`;
    const video = $("video");
    if (video.dataset.job !== job.id) {
      video.dataset.job = job.id;
      video.poster = `${base}/thumbnail`;
      video.src = `${base}/video`;
    }
    $("dl-video").href = `${base}/video?download=1`;
    $("dl-srt").href = `${base}/subtitles?format=srt&download=1`;
    $("dl-vtt").href = `${base}/subtitles?format=vtt&download=1`;
    $("dl-thumb").href = `${base}/thumbnail`;
    result.hidden = false;
  } else {
    result.hidden = true;
  }
  const li = jobs.get(job.id);
  if (li) renderRow(job);
}

async function refreshJob(id) {
  try {
    const data = await api("GET", `/api/jobs/${id}`);
    if (remember(data.job)) renderRow(data.job);
    showJob(data.job);
    return data.job;
  } catch (e) {
    if (current && current.id === id && online !== false) {
      $("job-error").hidden = false;
      $("job-error").textContent = e.message;
    }
    return null;
  }
}

function openJobStream() {
  if (!current) return;
  if (current.es) current.es.close();
  const c = current;
  const es = new EventSource(`/api/jobs/${c.id}/events/stream?after=${c.lastId}`);
  c.es = es;
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.id <= c.lastId) return;
    c.lastId = ev.id;
    appendLog(ev);
    if (ev.type === "progress" && c.job && ev.payload) {
      c.job.progress = ev.payload.progress;
      c.job.stage = "render";
      c.job.lastEventId = Math.max(c.job.lastEventId || 0, ev.id);
      setProgress(c.job);
      return;
    }
    if (TERMINAL_TYPES.has(ev.type)) {
      es.close();
      refreshJob(c.id);
      return;
    }
    refreshSoon(c.id);
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED && current === c) {
      // A 204 (nothing after the terminal event) or a refusal: look at the job once more.
      refreshJob(c.id);
    }
  };
}

async function openJob(id) {
  if (current && current.id === id) return;
  if (current && current.es) current.es.close();
  current = { id, es: null, lastId: 0, job: null };
  $("log").textContent = "";
  $("result").hidden = true;
  const video = $("video");
  video.removeAttribute("src");
  delete video.dataset.job;
  $("job-error").hidden = true;
  $("new").hidden = true;
  $("job").hidden = false;
  $("job-title").textContent = "Loading…";
  document.querySelectorAll("#jobs li").forEach((li) => li.classList.toggle("current", li.dataset.id === id));
  const job = await refreshJob(id);
  if (!job) {
    $("job-title").textContent = "Job not found";
    return;
  }
  $("job-title").focus();
  openJobStream();
}

function showForm() {
  if (current && current.es) current.es.close();
  current = null;
  $("job").hidden = true;
  $("new").hidden = false;
  document.querySelectorAll("#jobs li.current").forEach((li) => li.classList.remove("current"));
}

function route() {
  const m = location.hash.match(/^#\/jobs\/([0-9a-fA-F-]{36})$/);
  if (m) openJob(m[1].toLowerCase());
  else showForm();
}

// ---------------------------------------------------------------- the form

async function loadModels() {
  const help = $("aiModel-help");
  try {
    const res = await fetch("/api/models", { cache: "no-store", headers: withToken({}) });
    const data = await res.json();
    if (res.status === 401) {
      lock(data.message);
      return;
    }
    const sel = $("aiModel");
    sel.textContent = "";
    for (const m of data.models || []) {
      const o = document.createElement("option");
      o.value = m;
      o.textContent = m + (m === data.default ? " (default)" : "");
      o.selected = m === data.default;
      sel.append(o);
    }
    help.textContent = data.status === "success"
      ? "Models the configured language model server offers."
      : `${data.message} Without it the built-in writer makes the script.`;
  } catch (e) {
    help.textContent = "The model list could not be loaded.";
  }
}

function formBody() {
  const v = (id) => $(id).value.trim();
  const body = { videoSubject: v("videoSubject") };
  if (v("script")) body.script = $("script").value;
  if (v("aiModel")) body.aiModel = v("aiModel");
  if (v("voice")) body.voice = v("voice");
  if (v("paragraphNumber")) body.paragraphNumber = v("paragraphNumber");
  if (v("customPrompt")) body.customPrompt = $("customPrompt").value;
  if (v("threads")) body.threads = v("threads");
  body.subtitlesStyle = v("subtitlesStyle");
  body.subtitlesPosition = `${v("posH")},${v("posV")}`;
  body.color = v("color").toUpperCase();
  body.aspectRatio = v("aspectRatio");
  body.useMusic = $("useMusic").checked;
  body.automateYoutubeUpload = $("automateYoutubeUpload").checked;
  return body;
}

function formError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = !message;
  if (message) box.focus();
}

async function submit(e) {
  e.preventDefault();
  formError("");
  if (!$("videoSubject").value.trim()) {
    formError("Please enter a subject: what the video is about.");
    $("videoSubject").focus();
    return;
  }
  const button = $("submit");
  button.disabled = true;
  try {
    const data = await api("POST", "/api/generate", formBody());
    if (data.warnings && data.warnings.length) console.warn(data.warnings.join("\n"));
    location.hash = `#/jobs/${data.jobId}`;
  } catch (err) {
    formError(err.message);
  } finally {
    button.disabled = online === false;
  }
}

async function act(kind) {
  if (!current) return;
  const c = current;
  try {
    await api("POST", `/api/jobs/${c.id}/${kind}`, {});
    const job = await refreshJob(c.id);
    if (kind === "retry" && job) openJobStream();
  } catch (err) {
    $("job-error").hidden = false;
    $("job-error").textContent = err.message;
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  const t = token();
  setToken(t);
  $("auth-form").addEventListener("submit", unlock);
  $("forget").addEventListener("click", async () => {
    try {
      await fetch("/api/session", { method: "DELETE", cache: "no-store", headers: withToken({}) });
    } catch (e) {
      /* the daemon is gone: the cookie ends with the browser's session */
    }
    setToken("");
    location.reload();
  });
  $("form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", () => act("cancel"));
  $("retry").addEventListener("click", () => act("retry"));
  window.addEventListener("hashchange", route);
  // The session cookie lasts the browser's session: a stored token asks for it again at each load
  // (a 401 here locks the page, as any later one does).
  if (t && (await openSession(t)) === 401) {
    lock("The daemon refused the stored token: it is no longer its server.api_token.");
    return;
  }
  loadModels();
  loadJobs();
  openListStream();
  route();
});
