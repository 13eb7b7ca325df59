// purposegate policy explorer: the page is complete without this script.
// It only keeps the page current: every 2 s it asks /api/policy whether
// the revision (or the last reload error) changed, and reloads the page
// when it did, keeping the try form's request.
"use strict";
(function () {
  let etag = null;
  const live = document.getElementById("live");
  async function poll() {
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const response = await fetch("/api/policy", { headers, cache: "no-store" });
      if (response.status === 200) {
        const fresh = response.headers.get("ETag");
        const body = await response.json();
        if (etag !== null && fresh !== etag) {
          if (live) live.textContent = " — policy changed to revision " + body.revision + "; reloading";
          window.location.reload();
          return;
        }
        etag = fresh;
        if (body.revision !== document.body.dataset.revision) {
          window.location.reload();
          return;
        }
      }
    } catch (e) {
      if (live) live.textContent = " — the server cannot be reached";
    }
    window.setTimeout(poll, 2000);
  }
  poll();
})();
