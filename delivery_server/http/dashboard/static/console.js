// delivery-server console: refresh the polled blocks in place.
//
// Every element with data-poll="URL" is replaced, every data-poll-seconds, by the HTML the
// server renders at URL (the same template as on the full page, escaped there). Polling
// stops once a block says data-final (the job is over), pauses while the tab is hidden,
// backs off after errors, and a 401 (the session ended) sends the browser to the login
// page. Without this script the pages work all the same; they just stand still.
(function () {
  "use strict";

  function poll(block) {
    var url = block.getAttribute("data-poll");
    var every = Math.max(1, Number(block.getAttribute("data-poll-seconds")) || 3) * 1000;
    var failures = 0;

    function later() {
      var wait = every * Math.min(Math.pow(2, failures), 16);
      window.setTimeout(tick, wait);
    }

    function tick() {
      if (document.hidden) {
        later();
        return;
      }
      window
        .fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign("/login");
            return null;
          }
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          if (html === null) {
            return;
          }
          failures = 0;
          block.innerHTML = html;
          block.setAttribute("data-refreshed", new Date().toISOString());
          if (!block.querySelector("[data-final]")) {
            later();
          }
        })
        .catch(function () {
          failures += 1;
          later();
        });
    }

    if (!block.querySelector("[data-final]")) {
      later();
    }
  }

  document.querySelectorAll("[data-poll]").forEach(poll);
})();
