// muster console: the little behaviour htmx does not give. No inline script anywhere; this
// file runs under "script-src 'self'".
(function () {
  "use strict";

  // The live badge follows the page's SSE connection (htmx's SSE extension reports on it).
  function badge(text, on) {
    var b = document.getElementById("live-badge");
    if (!b) return;
    b.textContent = text;
    b.classList.toggle("live-on", on);
    b.classList.toggle("live-off", !on);
  }
  // The page's event sources, closed as the page goes away: a connection the browser cuts on
  // navigation would otherwise be reported (and logged) as an error.
  var sources = [];
  if (window.htmx) {
    window.htmx.createEventSource = function (url) {
      var es = new EventSource(url, { withCredentials: true });
      sources.push(es);
      return es;
    };
  }
  window.addEventListener("pagehide", function () {
    sources.forEach(function (es) { es.close(); });
  });
  window.addEventListener("beforeunload", function () {
    sources.forEach(function (es) { es.close(); });
  });

  document.addEventListener("htmx:sseOpen", function () { badge("Live", true); });
  document.addEventListener("htmx:sseError", function () { badge("Live: reconnecting", false); });
  document.addEventListener("htmx:sseClose", function () { badge("Live: off", false); });

  // Forms and buttons with data-confirm ask first (retry, abort, delete, bulk changes).
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var submitter = e.submitter;
    var msg = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);

  // "Select all" for bulk actions.
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("input[data-select-all]")) {
      var form = t.form;
      if (!form) return;
      // form.elements includes inputs outside the form element that name it in form="…".
      var name = t.getAttribute("data-select-all");
      Array.prototype.forEach.call(form.elements, function (c) {
        if (c.name === name && c.type === "checkbox") c.checked = t.checked;
      });
    }
  });

  // Rows refreshed from the live stream are highlighted by the server (class "changed");
  // the highlight fades by CSS. Re-process swapped content for htmx attributes.
  document.addEventListener("htmx:afterSwap", function (e) {
    var el = e.detail && e.detail.elt;
    if (el && el.classList && el.classList.contains("changed")) {
      el.setAttribute("data-changed-at", String(Date.now()));
    }
  });
})();
