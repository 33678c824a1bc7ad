// Refresh the live part of the status page: fetch /live every data-refresh seconds.
(function () {
  "use strict";
  const live = document.getElementById("live");
  const every = Math.max(0.5, Number(live.dataset.refresh) || 10) * 1000;

  async function refresh() {
    try {
      const response = await fetch("live", { cache: "no-store" });
      if (!response.ok) {
        throw new Error("status " + response.status);
      }
      live.innerHTML = await response.text();
      document.body.classList.remove("offline");
    } catch (error) {
      document.body.classList.add("offline");  // the server is down: keep the last view
    } finally {
      window.setTimeout(refresh, every);
    }
  }

  window.setTimeout(refresh, every);
})();
