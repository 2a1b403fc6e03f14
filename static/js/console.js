// The incident console: timeline scroll and system-entry filter across live pushes, the
// narration cadence reminder, and the revert a chosen flag suggests.
(() => {
  const scrollTimeline = () => { const list = document.getElementById("timeline-list"); if (list) list.scrollTop = list.scrollHeight; };
  const applySystemFilter = () => {
    const box = document.querySelector("[data-toggle-system]");
    const list = document.getElementById("timeline-list");
    if (box && list) list.classList.toggle("hide-system", box.checked);
  };
  let hideSystem = false;
  document.addEventListener("change", (event) => {
    if (event.target.matches("[data-toggle-system]")) { hideSystem = event.target.checked; applySystemFilter(); }
  });
  document.body.addEventListener("htmx:oobAfterSwap", (event) => {
    if (event.detail.target.id === "narration-last") remind();
    if (["incident-timeline", "timeline-list"].includes(event.detail.target.id)) {
      const box = document.querySelector("[data-toggle-system]");
      if (box) box.checked = hideSystem;
      applySystemFilter(); scrollTimeline();
    }
  });
  // The cadence reminder appears even when nothing else happens.
  const remind = () => {
    const note = document.getElementById("narration-reminder");
    if (!note || !note.dataset.limit || !note.dataset.open) return;
    const pushed = document.getElementById("narration-last");  // a narration pushed since
    const last = Math.max(Date.parse(note.dataset.last), pushed && pushed.dataset.last ? Date.parse(pushed.dataset.last) : 0);
    const silent = (Date.now() - last) / 60000;
    note.hidden = silent < Number(note.dataset.limit);
    note.querySelector(".minutes").textContent = Math.floor(silent);
  };
  // Choosing a flag for "Make one change" fills in its revert (restore the version it has now),
  // unless the commander wrote their own.
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id !== "change-flag-current") return;
    const now = event.detail.target.querySelector("[data-revert]");
    const box = document.querySelector("#change-form [name=revert_plan]");
    if (box && (box.value === "" || box.value === box.dataset.filled)) {
      box.value = box.dataset.filled = now ? now.dataset.revert : "";
    }
  });
  scrollTimeline(); remind(); setInterval(remind, 15000);
})();
