// Live updates: tell the server where each stream on this page stands, so it replays what we
// missed (after a reconnect, or between page render and socket open), then swaps in its partials.
(function () {
  function cursors() {
    var out = {};
    document.querySelectorAll("[data-live-stream]").forEach(function (el) {
      out[el.dataset.liveStream] = parseInt(el.dataset.liveSeq, 10) || 0;
    });
    return out;
  }
  function setStatus(state, text) {
    var el = document.getElementById("live-status");
    if (el) { el.dataset.state = state; el.textContent = text; }
  }
  document.addEventListener("htmx:wsOpen", function (e) {
    e.detail.socketWrapper.sendImmediately(JSON.stringify({ type: "resume", cursors: cursors() }));
  });
  document.addEventListener("htmx:wsClose", function () { setStatus("reconnecting", "Reconnecting…"); });
  document.addEventListener("htmx:wsAfterMessage", function () {
    // A row can arrive both in the rendered page and in the replay; keep the first copy.
    var seen = new Set();
    document.querySelectorAll("[data-live-key]").forEach(function (el) {
      if (seen.has(el.dataset.liveKey)) { el.remove(); } else { seen.add(el.dataset.liveKey); }
    });
  });
})();
