// The admin dashboard refreshes its figures itself: every few seconds it fetches the page again
// and swaps in the fresh #dashboard-live, leaving the search box and its results as they are.
// The interval, or "paused", is the operator's choice, kept for the browser tab. No framework,
// nothing inline: served from this site, so a Content-Security-Policy of script-src 'self' allows it.
"use strict";

(function () {
  const live = document.getElementById("dashboard-live");
  const controls = document.getElementById("refresh");
  const every = document.getElementById("refresh-every");
  const status = document.getElementById("refresh-status");
  if (!live || !controls || !every || !status) return;
  const KEY = "supworker.dashboard.refresh-seconds";
  let timer = null;

  const stored = sessionStorage.getItem(KEY);
  if (stored !== null && [...every.options].some((option) => option.value === stored)) every.value = stored;

  function seconds() {
    return Number(every.value);
  }

  function schedule() {
    clearTimeout(timer);
    timer = seconds() > 0 ? setTimeout(refresh, seconds() * 1000) : null;
  }

  async function refresh() {
    clearTimeout(timer); // one refresh at a time, whoever started it
    if (document.hidden) return; // a hidden tab asks for nothing; it refreshes when shown again
    try {
      const response = await fetch(live.dataset.refreshUrl, { credentials: "same-origin" });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = response.ok ? page.getElementById("dashboard-live") : null;
      if (!fresh) {
        // Signed out, or an error page: stop, rather than ask again and again.
        status.textContent = `stopped (${response.status}${response.redirected ? ", signed out?" : ""}): reload the page`;
        return;
      }
      live.replaceChildren(...fresh.childNodes);
      status.textContent = "";
    } catch (error) {
      status.textContent = `refresh failed: ${error.message}; trying again`;
    }
    schedule();
  }

  every.addEventListener("change", () => {
    sessionStorage.setItem(KEY, every.value);
    schedule();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && seconds() > 0) refresh();
  });
  controls.hidden = false;
  schedule();
})();
