// docrecovery dashboard: live refresh and "select all", no library.
// A page whose <body data-refresh="N"> is N > 0 reloads its <main id="live"> every N
// seconds from the same URL (same credentials and cookie), while the tab is visible
// and no form field has focus.
(function () {
  "use strict";
  function refresh() {
    if (document.hidden || document.activeElement && document.activeElement.form) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live) live.innerHTML = fresh.innerHTML;
      })
      .catch(function () { /* the next tick tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var seconds = parseInt(document.body.dataset.refresh || "0", 10);
    if (seconds > 0) window.setInterval(refresh, seconds * 1000);
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
    });
  });
})();
