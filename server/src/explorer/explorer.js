// purposegate policy explorer: the page is complete without this script.
// It only keeps the page current: every 2 s it asks /api/policy whether
// the revision or the last reload error changed since the page was served
// (its ETag, in data-etag), and reloads the page when they did, keeping
// the try form's request.
"use strict";
(function () {
  const etag = document.body.dataset.etag;
  const live = document.getElementById("live");
  const say = (text) => { if (live && live.textContent !== text) live.textContent = text; };
  async function poll() {
    try {
      const response = await fetch("/api/policy", {
        headers: { "If-None-Match": etag },
        cache: "no-store",
      });
      if (response.status === 200 && response.headers.get("ETag") !== etag) {
        say(" — the policy changed; reloading");
        window.setTimeout(() => window.location.reload(), 300);
        return;
      }
      say("");
    } catch (e) {
      say(" — the server cannot be reached; showing the last revision seen");
    }
    window.setTimeout(poll, 2000);
  }
  window.setTimeout(poll, 2000);
})();
