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

  // A checkbox that toggles a class on another element: data-toggle-class="name" data-toggle-target="#id".
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-toggle-class]")) return;
    var target = document.querySelector(box.dataset.toggleTarget);
    if (target) target.classList.toggle(box.dataset.toggleClass, box.checked);
  });
})();
