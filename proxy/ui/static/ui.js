// ctxgate's operator page, enhanced: the list of held calls kept live (server-sent events),
// decisions sent without a reload, and each call's time left counted down. Without this file
// every page still reads, and the buttons still decide (a form post and a redirect).
"use strict";

function countDown() {
  for (const el of document.querySelectorAll("[data-expires]")) {
    const left = Math.max(0, Math.round((Date.parse(el.dataset.expires) - Date.now()) / 1000));
    el.textContent = left + " s";
    el.closest(".countdown")?.classList.toggle("late", left <= 10);
  }
}

function say(text) {
  const log = document.getElementById("decided-log");
  if (!log) return;
  const line = document.createElement("p");
  line.textContent = text;
  log.prepend(line);
  while (log.children.length > 10) log.lastChild.remove();
}

async function decide(form, button) {
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  const body = new FormData(form);
  body.set("verdict", button.value);
  try {
    const response = await fetch(form.action, {
      method: "POST", body, credentials: "same-origin", headers: { "X-Requested-With": "ctxgate-ui" },
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) {
      const a = answer.approval;
      say(`${a.tool} in ${a.project}: ${a.status} by ${a.decided_by}.`);
      form.closest(".approval")?.remove();
    } else if (answer.approval) {
      say(`${answer.approval.tool} was already ${answer.approval.status} by ${answer.approval.decided_by}.`);
      form.closest(".approval")?.remove();
    } else {
      say(`Not decided: ${answer.error?.message || response.status}`);
      buttons.forEach((b) => (b.disabled = false));
    }
  } catch (error) {
    say(`Not decided: ${error}`);
    buttons.forEach((b) => (b.disabled = false));
  }
}

function live(state) {
  const pending = document.getElementById("pending");
  const events = new EventSource(state.dataset.live);
  events.addEventListener("open", () => {
    state.textContent = "Live: new calls and decisions made anywhere appear here.";
    state.classList.add("on");
  });
  events.addEventListener("approvals", (event) => {
    const data = JSON.parse(event.data);
    pending.innerHTML = data.pending;
    document.title = `Approvals (${data.count}) · ctxgate`;
    for (const d of data.decided) say(`${d.tool} in ${d.project}: ${d.status} by ${d.decided_by}.`);
    countDown();
  });
  events.addEventListener("trouble", (event) => {
    state.textContent = JSON.parse(event.data).message;
    state.classList.remove("on");
  });
  events.addEventListener("error", () => {
    state.textContent = "Reconnecting to the gateway…";
    state.classList.remove("on");
  });
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.classList.contains("decide")) return;
  event.preventDefault();
  decide(form, event.submitter || form.querySelector("button"));
});

document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("live-state");
  if (state && window.EventSource) live(state);
  countDown();
  setInterval(countDown, 1000);
});
