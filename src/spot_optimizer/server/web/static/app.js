// Live updates for the dashboard: poll the page's HTML fragment every 2 s and swap it in when it changed.
// Times marked data-age show "12 s ago" (the absolute time stays in the title).
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var last = null;

  function age(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function renderAges(root) {
    var nodes = (root || document).querySelectorAll("time[data-age]");
    var now = Date.now();
    for (var i = 0; i < nodes.length; i++) {
      var t = Date.parse(nodes[i].getAttribute("datetime"));
      if (isNaN(t)) continue;
      if (!nodes[i].title) nodes[i].title = nodes[i].textContent;
      nodes[i].textContent = age((now - t) / 1000);
    }
  }

  function setStatus(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "bad" : "";
  }

  function poll() {
    if (!live || document.hidden) return;
    fetch(live.getAttribute("data-live"), {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (res) {
        if (res.redirected && res.url.indexOf("/login") !== -1) {
          window.location.href = "/login";
          return null;
        }
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.text();
      })
      .then(function (html) {
        if (html === null) return;
        if (html !== last) {
          last = html;
          live.innerHTML = html;
          renderAges(live);
        }
        setStatus("live · updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (err) { setStatus("live updates paused: " + err.message, true); });
  }

  renderAges(document);
  setInterval(function () { renderAges(document); }, 1000);
  if (live) setInterval(poll, PERIOD_MS);
})();
