// medlabel browser shell: talks only to the HTTP API (/api/v1), with the HttpOnly session cookie.
const API = "/api/v1";
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const res = await fetch(API + path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
    ...options,
  });
  if (res.status === 204) return null;
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error((body.error && body.error.message) || res.statusText);
    err.status = res.status;
    err.code = body.error && body.error.code;
    throw err;
  }
  return body;
}

function show(view) {
  $("login-view").hidden = view !== "login";
  $("home-view").hidden = view !== "home";
  $("logout").hidden = view !== "home";
  $("whoami").hidden = view !== "home";
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (cls) el.className = cls;
  return el;
}

const QUALITY_ROLES = ["manager", "reviewer", "validator", "auditor"];

function isoWeek(d) {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const y = t.getUTCFullYear();
  const week = Math.ceil(((t - Date.UTC(y, 0, 1)) / 86400000 + 1) / 7);
  return `${y}-W${String(week).padStart(2, "0")}`;
}

function fmt(v) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(2);
}

// The project's agreement this week against its targets, and alerts with the annotators involved.
async function renderQuality(li, project) {
  const box = document.createElement("div");
  box.className = "quality";
  box.dataset.quality = "";
  li.append(box);
  try {
    const week = isoWeek(new Date());
    const q = await api(`/projects/${project.id}/quality?week=${week}&bootstrap_n=0`);
    const parts = [];
    for (const h of q.headline.filter((h) => h.target !== null)) {
      const cls = h.met === false ? "bad" : h.met === true ? "good" : "none";
      parts.push(`<span class="kpi ${cls}" data-metric="${h.metric}">${h.metric} ${fmt(h.value)} / target ${fmt(h.target)} (n=${h.n})</span>`);
    }
    box.innerHTML = `<span class="roles">${week}:</span> ` + parts.join(" ");
    for (const a of q.alerts) {
      const p = document.createElement("p");
      p.className = "alert";
      p.textContent = `⚠ ${a.metric} ${fmt(a.value)} below target ${fmt(a.target)} from ${a.window_start.slice(0, 10)} to ${a.window_end.slice(0, 10)} — annotators: ${a.annotators.join(", ") || "—"}`;
      box.append(p);
    }
  } catch (err) {
    box.textContent = `quality: ${err.message}`;
  }
}

async function renderHome(user) {
  $("whoami").textContent = `${user.display_name || user.username} (${user.role})`;
  const projects = await api("/projects");
  const list = $("project-list");
  list.replaceChildren();
  for (const p of projects) {
    const li = document.createElement("li");
    li.dataset.projectId = p.id;
    li.append(text("strong", p.name), document.createElement("br"));
    if (p.description) li.append(text("span", p.description), document.createElement("br"));
    li.append(text("span", p.my_roles.length ? `your roles: ${p.my_roles.join(", ")}` : "administrator", "roles"));
    list.append(li);
    if (user.role === "admin" || p.my_roles.some((r) => QUALITY_ROLES.includes(r))) renderQuality(li, p);
  }
  $("no-projects").hidden = projects.length > 0;
  show("home");
}

async function boot() {
  try {
    const user = await api("/auth/me");
    await renderHome(user);
  } catch (err) {
    show("login");
    if (err.code === "session_expired") {
      const e = $("login-error");
      e.textContent = "Your session ended after inactivity. Please sign in again.";
      e.hidden = false;
    }
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const e = $("login-error");
  e.hidden = true;
  try {
    const res = await api("/auth/login", {
      method: "POST",
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    $("password").value = "";
    await renderHome(res.user);
  } catch (err) {
    e.textContent = err.message;
    e.hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/auth/logout", { method: "POST" }); } finally { show("login"); }
});

boot();
