// Forewarn console: small progressive enhancements only; every page works without this file.
"use strict";

// Ask before an irreversible action (send, stop).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The composer's live recipient count.
const composer = document.querySelector("form[data-count-url]");
if (composer) {
  const output = composer.querySelector("#recipient-count");
  let timer = 0;
  const refresh = async () => {
    const params = new URLSearchParams();
    for (const field of composer.querySelectorAll("[data-audience]")) {
      if (field.type === "checkbox") {
        if (field.checked) params.set(field.name, "1");
      } else {
        params.set(field.name, field.value);
      }
    }
    try {
      const response = await fetch(`${composer.dataset.countUrl}?${params}`, { credentials: "same-origin" });
      const data = await response.json();
      output.textContent = data.error ? data.error : `${data.total} customers`;
    } catch {
      output.textContent = "count not available";
    }
  };
  composer.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  });
  refresh();
}

// The next-update timer: counts down, and turns red once the update is overdue.
const due = document.querySelector("[data-due]");
if (due) {
  const at = Date.parse(due.dataset.due);
  const tick = () => {
    const seconds = Math.round((at - Date.now()) / 1000);
    const minutes = Math.floor(Math.abs(seconds) / 60);
    const span = minutes >= 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes} min`;
    due.textContent = seconds < 0 ? `overdue by ${span}` : `in ${span}`;
    due.classList.toggle("overdue", seconds < 0);
  };
  setInterval(tick, 15000);
}
