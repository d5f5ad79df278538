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
