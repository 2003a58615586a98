// headwater UI: the few things a server-rendered page cannot do alone. Signing in and out,
// and the actions (promote, roll back, acknowledge), each confirmed in a dialog with a reason
// and sent as JSON to the API's own routes, where the key's scopes are checked.
"use strict";

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let detail = "";
  try { detail = (await response.json()).detail || ""; } catch (e) { detail = ""; }
  return { ok: response.ok, status: response.status, detail: detail };
}

function signIn(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = form.querySelector("[data-error]");
    const key = form.querySelector("input[name=key]").value.trim();
    const answer = await postJson("/ui/session", { key: key });
    if (answer.ok) {
      window.location.assign(form.dataset.next || "/ui");
    } else {
      out.textContent = answer.detail || "The key was refused.";
    }
  });
}

function signOut(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await postJson("/ui/logout", {});
    window.location.assign("/ui/login");
  });
}

// A button with data-action opens the dialog; the dialog's form sends the request.
function action(button) {
  const dialog = document.getElementById("confirm");
  if (!dialog) return;  // a page without actions' dialog shows no action either
  button.addEventListener("click", () => {
    dialog.returnTo = button;
    dialog.querySelector("[data-title]").textContent = button.dataset.title;
    dialog.querySelector("[data-error]").textContent = "";
    dialog.querySelector("textarea").value = "";
    dialog.dataset.url = button.dataset.url;
    dialog.dataset.body = button.dataset.body || "{}";
    dialog.dataset.reasonRequired = button.dataset.reasonRequired || "";
    dialog.showModal();
    dialog.querySelector("textarea").focus();
  });
}

function confirmDialog(dialog) {
  const form = dialog.querySelector("form");
  dialog.querySelector("[data-cancel]").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = dialog.querySelector("textarea").value.trim();
    if (dialog.dataset.reasonRequired && !reason) {
      dialog.querySelector("[data-error]").textContent = "Say why: the reason is kept in the history.";
      return;
    }
    const body = Object.assign(JSON.parse(dialog.dataset.body), { reason: reason });
    const confirm = form.querySelector("button[type=submit]");
    if (confirm.disabled) return;  // one request per confirmation: a double click sends one
    confirm.disabled = true;
    try {
      const answer = await postJson(dialog.dataset.url, body);
      if (answer.ok) {
        dialog.close();
        window.location.reload();
        return;
      }
      dialog.querySelector("[data-error]").textContent =
        "Refused (" + answer.status + "): " + answer.detail;
    } finally {
      confirm.disabled = false;
    }
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnTo) dialog.returnTo.focus();  // back where the keyboard was
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-login]").forEach(signIn);
  document.querySelectorAll("form[data-logout]").forEach(signOut);
  document.querySelectorAll("button[data-action]").forEach(action);
  const dialog = document.getElementById("confirm");
  if (dialog) confirmDialog(dialog);
});
