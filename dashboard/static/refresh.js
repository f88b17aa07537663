// Reload the page when the archive folder changed (a new checkpoint, stage, history row or
// figure): poll /api/version.json every data-refresh-seconds. No other script, nothing fetched
// from anywhere but this server.
(function () {
  "use strict";
  var body = document.body;
  var url = body.dataset.versionUrl;
  var current = body.dataset.version;
  var seconds = parseInt(body.dataset.refreshSeconds || "30", 10);
  var note = document.getElementById("refresh-note");
  if (!url || !(seconds > 0)) {
    return;
  }
  function say(text) {
    if (note) {
      note.textContent = text;
    }
  }
  function check() {
    fetch(url, {cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d && d.version && d.version !== current) {
          say("New results: reloading…");
          window.location.reload();
        } else {
          say("Live: checked " + new Date().toLocaleTimeString() + "; checks for new checkpoints every " + seconds + " s.");
        }
      })
      .catch(function () {
        say("The dashboard server does not answer; trying again every " + seconds + " s.");
      });
  }
  say("Live: checks for new checkpoints every " + seconds + " s.");
  window.setInterval(check, seconds * 1000);
})();
