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
