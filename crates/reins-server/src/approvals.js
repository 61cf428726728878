"use strict";
const statusEl = document.getElementById("status");
const listEl = document.getElementById("list");
const tokenEl = document.getElementById("token");
tokenEl.value = sessionStorage.getItem("reins-token") || "";

function headers() {
  const h = { "content-type": "application/json" };
  const t = sessionStorage.getItem("reins-token");
  if (t) h["authorization"] = "Bearer " + t;
  return h;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

async function load() {
  statusEl.textContent = "Loading…";
  const r = await fetch("/v1/approvals?status=pending", { headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    statusEl.textContent = "Error " + r.status + ": " + ((body.error && body.error.message) || r.statusText);
    listEl.replaceChildren();
    return;
  }
  listEl.replaceChildren();
  if (body.data.length === 0) {
    statusEl.textContent = "No pending approvals.";
    return;
  }
  statusEl.textContent = body.data.length + " pending approval(s).";
  for (const a of body.data) {
    const trace = el("table", {}, el("tr", {}, el("th", {}, "layer"), el("th", {}, "name"), el("th", {}, "result")));
    for (const s of a.trace || []) {
      trace.append(el("tr", {}, el("td", {}, s.layer), el("td", {}, s.name), el("td", {}, s.result)));
    }
    const comment = el("input", { type: "text", id: "comment-" + a.id, "aria-label": "Comment for " + a.id, placeholder: "comment (optional)" });
    const approve = el("button", { class: "approve", type: "button", "data-id": a.id, "data-decision": "approve" }, "Approve");
    const reject = el("button", { class: "reject", type: "button", "data-id": a.id, "data-decision": "reject" }, "Reject");
    listEl.append(el("article", { id: "approval-" + a.id, "aria-labelledby": "h-" + a.id },
      el("h2", { id: "h-" + a.id }, a.action.tool + " — " + a.pipeline),
      el("p", {}, "Why: " + a.reason + " (gate " + a.gate + ", run " + a.run_id + ")"),
      el("pre", {}, JSON.stringify(a.action.arguments, null, 2)),
      el("details", {}, el("summary", {}, "Run trace"), trace),
      el("p", {}, comment, " ", approve, " ", reject)));
  }
}

listEl.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-id]");
  if (!b) return;
  const id = b.dataset.id;
  const comment = document.getElementById("comment-" + id).value || null;
  b.disabled = true;
  const r = await fetch("/v1/approvals/" + encodeURIComponent(id), {
    method: "POST", headers: headers(), body: JSON.stringify({ decision: b.dataset.decision, comment }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok) {
    const run = body.run ? " Run " + body.run.run_id + " is now " + body.run.status + "." : "";
    await load();
    statusEl.textContent = "Decided " + id + ": " + body.approval.status + "." + run;
  } else {
    b.disabled = false;
    statusEl.textContent = "Error " + r.status + ": " + ((body.error && body.error.message) || r.statusText);
  }
});

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("reins-token", tokenEl.value.trim());
  load();
});

load();
