// Phoenix dashboard: keeps a page live. The server sends Server-Sent Events named
// "fragments" whose data maps element ids to their new inner HTML; this script swaps them
// in. No polling: the browser holds one stream open, and when it drops (the server
// restarts) the page says "reconnecting…" and opens a new one.
"use strict";
(function () {
  const url = document.body.dataset.stream;
  const status = document.getElementById("live-status");
  if (!url || !window.EventSource) {
    return;
  }
  function say(text, cls) {
    if (status) {
      status.textContent = text;
      status.className = "status " + cls;
    }
  }
  let source = null;
  let retryTimer = null;
  function connect() {
    retryTimer = null;
    source = new EventSource(url);
    source.addEventListener("open", function () {
      say("live", "live");
    });
    source.addEventListener("fragments", function (ev) {
      let parts;
      try {
        parts = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      for (const id of Object.keys(parts)) {
        const el = document.getElementById(id);
        if (el) {
          el.innerHTML = parts[id];
        }
      }
      say("live", "live");
      document.body.dataset.updated = String(Date.now());
    });
    source.addEventListener("problem", function (ev) {
      say("store unavailable: " + ev.data, "problem");
    });
    source.addEventListener("error", function () {
      say("reconnecting…", "reconnecting");
      // The browser retries by itself while the stream is CONNECTING; once it gave up
      // (CLOSED: an error status such as 401 or 502), try again in 5 s.
      if (source.readyState === EventSource.CLOSED && retryTimer === null) {
        source.close();
        retryTimer = setTimeout(connect, 5000);
      }
    });
  }
  connect();
})();
