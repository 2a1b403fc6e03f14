// Behaviour every page shares, as static code: the Content-Security-Policy runs no inline script
// and htmx runs with allowEval off, so markup says what to do in data- attributes.
(function () {
  // Charts: the figure travels as data (rollouts/charts.py figure_html); draw each once, also
  // when a live push or an htmx swap brings a new one.
  var CHART_CONFIG = { displayModeBar: false, responsive: true };
  function drawCharts(root) {
    if (!window.Plotly) return;
    var scope = root && root.querySelectorAll ? root : document;
    var found = Array.prototype.slice.call(scope.querySelectorAll("[data-figure]"));
    if (scope.matches && scope.matches("[data-figure]")) found.push(scope);
    found.forEach(function (el) {
      if (el.dataset.drawn === el.dataset.figure.length + "") return;
      var figure = JSON.parse(el.dataset.figure);
      window.Plotly.newPlot(el, figure.data, figure.layout || {}, CHART_CONFIG);
      el.dataset.drawn = el.dataset.figure.length + "";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });

  // The field a page is for takes the focus without scrolling the page past its header (the
  // console's title, severity and status must be the first thing a paged commander sees).
  document.addEventListener("DOMContentLoaded", function () {
    var field = document.querySelector("[data-focus-on-load]");
    if (field) field.focus({ preventScroll: true });
  });

  // Every htmx form shows it is working: its buttons are disabled while the request is in flight
  // (a second click cannot post twice). A request that failed says so next to the form, with the
  // typed text kept to send again.
  function formOf(event) {
    var elt = event.detail.elt;
    return elt instanceof HTMLFormElement ? elt : elt.closest ? elt.closest("form") : null;
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = formOf(event);
    if (!form) return;
    form.setAttribute("aria-busy", "true");
    form.querySelectorAll("button:not([disabled])").forEach(function (button) {
      button.disabled = true;
      button.dataset.busyDisabled = "1";
    });
    var failed = form.nextElementSibling;
    if (failed && failed.classList.contains("send-failed")) failed.remove();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = formOf(event);
    if (!form) return;
    form.removeAttribute("aria-busy");
    form.querySelectorAll("button[data-busy-disabled]").forEach(function (button) {
      button.disabled = false;
      delete button.dataset.busyDisabled;
    });
  });
  function sendFailed(event, why) {
    var form = formOf(event);
    if (!form) return;
    var note = document.createElement("p");
    note.className = "error send-failed";
    note.setAttribute("role", "alert");
    note.dataset.testid = "send-failed";
    note.textContent = why + ": press the button again to retry (what you typed is kept).";
    form.insertAdjacentElement("afterend", note);
    note.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("htmx:sendError", function (event) {
    sendFailed(event, "Not sent: the server did not answer (offline or restarting)");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status >= 500) sendFailed(event, "Failed: the server answered " + status);
  });
  document.addEventListener("htmx:load", function (event) { drawCharts(event.detail.elt); });

  // A form posted with htmx: after a success (and no refusal in the answer) it resets, or clears
  // only the fields named, focuses what it names, empties what it names, refreshes what it names.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || !form.dataset.afterSuccess) return;
    if (!event.detail.successful || event.detail.xhr.responseText.indexOf("action-error") !== -1) return;
    if (form.dataset.afterSuccess === "reset") {
      form.reset();
    } else {
      form.querySelectorAll(form.dataset.afterSuccess).forEach(function (field) { field.value = ""; });
    }
    if (form.dataset.empty) {
      document.querySelectorAll(form.dataset.empty).forEach(function (el) { el.textContent = ""; });
    }
    if (form.dataset.focus) {
      var target = form.querySelector(form.dataset.focus);
      if (target) target.focus();
    }
    if (form.dataset.refreshUrl && window.htmx) {
      window.htmx.ajax("GET", form.dataset.refreshUrl, {
        target: form.dataset.refreshTarget, select: form.dataset.refreshTarget, swap: "outerHTML"
      });
    }
  });

  // Sections that re-read themselves when a live push arrives, unless someone is typing in one
  // of the fields named by data-unless-typed (a push must not wipe a half-written reason).
  document.addEventListener("htmx:wsAfterMessage", function () {
    document.querySelectorAll("[data-refresh-on-push]").forEach(function (el) {
      var typed = el.dataset.unlessTyped
        ? Array.prototype.some.call(document.querySelectorAll(el.dataset.unlessTyped), function (f) { return f.value; })
        : false;
      if (!typed && window.htmx) window.htmx.trigger(el, "stepwise:refresh");
    });
  });

  // A button that copies a field's text: data-copy-target="#id" (a new API token, shown once).
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy-target]") : null;
    if (!button) return;
    var field = document.querySelector(button.dataset.copyTarget);
    if (!field) return;
    function copied() { button.textContent = "Copied"; }
    function selectedOnly() { button.textContent = "Selected: press Ctrl+C"; }
    field.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(copied, selectedOnly);
    } else if (document.execCommand("copy")) {
      copied(); // plain http (a laptop demo) has no Clipboard API; the selection still copies
    } else {
      selectedOnly();
    }
  });

  // A checkbox that toggles a class on another element: data-toggle-class="name" data-toggle-target="#id".
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-toggle-class]")) return;
    var target = document.querySelector(box.dataset.toggleTarget);
    if (target) target.classList.toggle(box.dataset.toggleClass, box.checked);
  });
})();
