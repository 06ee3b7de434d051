// The queue: rows still processing refresh themselves in place (no reload), tab counts stay current and
// a notice appears when new studies arrive; j/k (or arrows) move through the rows, Enter opens, / searches.
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const table = document.getElementById("queue");
  if (!table) return;
  const body = table.tBodies[0];
  const notice = document.getElementById("queue-notice");
  const search = document.querySelector('#queue-filters input[name="q"]');
  const state = table.dataset.state;
  const initialAwaiting = Number(table.dataset.awaiting || 0);
  let delay = 3000;

  function rows() {
    return Array.prototype.slice.call(body.querySelectorAll("tr.queue-row"));
  }

  function selectedIndex() {
    return rows().findIndex(function (row) { return row.classList.contains("selected"); });
  }

  function select(index) {
    const all = rows();
    if (!all.length) return;
    index = Math.max(0, Math.min(all.length - 1, index));
    all.forEach(function (row, i) { row.classList.toggle("selected", i === index); });
    const link = all[index].querySelector("a.row-link");
    if (link) link.focus();
    all[index].scrollIntoView({ block: "nearest" });
  }

  body.addEventListener("click", function (event) {
    const row = event.target.closest("tr.queue-row");
    if (!row || event.target.closest("a, button")) return;
    window.location.assign(row.dataset.href);
  });

  document.addEventListener("keydown", function (event) {
    if (FR.helpOpen && FR.helpOpen()) return;
    if (FR.isTyping(event) || FR.hasModifier(event)) {
      if (event.key === "Escape" && event.target === search) search.blur();
      return;
    }
    const current = selectedIndex();
    let handled = true;
    switch (event.key) {
      case "j": case "ArrowDown": select(current + 1); break;
      case "k": case "ArrowUp": select(current < 0 ? 0 : current - 1); break;
      case "/": if (search) { search.focus(); search.select(); } break;
      case "Enter":
        // Nothing selected yet: Enter opens the first (most suspicious) study.
        if (current < 0 && rows().length && !event.target.closest("a, button, input, select, textarea")) {
          window.location.assign(rows()[0].dataset.href);
        } else {
          handled = false;
        }
        break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  function updateCounts(counts) {
    let all = 0;
    Object.keys(counts).forEach(function (key) {
      all += counts[key];
      const node = document.querySelector('.tabs [data-count="' + key + '"]');
      if (node) node.textContent = String(counts[key]);
    });
    const total = document.querySelector('.tabs [data-count="all"]');
    if (total) total.textContent = String(all);
    if (state === "awaiting_review" && counts.awaiting_review > initialAwaiting) notice.hidden = false;
  }

  function replaceRow(id, html) {
    const old = document.getElementById("study-row-" + id);
    if (!old) return;
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (old.classList.contains("selected")) fresh.classList.add("selected");
    old.replaceWith(fresh);
  }

  async function poll() {
    if (document.hidden) {
      window.setTimeout(poll, delay);
      return;
    }
    const watched = rows().filter(function (row) { return row.hasAttribute("data-poll"); })
      .map(function (row) { return row.dataset.study; });
    const query = table.dataset.query ? table.dataset.query + "&" : "";
    try {
      const response = await fetch(table.dataset.rowsUrl + "?" + query + "ids=" + watched.join(","), {
        headers: { Accept: "application/json" }, credentials: "same-origin",
      });
      if (!response.ok) throw new Error(String(response.status));
      const data = await response.json();
      Object.keys(data.rows).forEach(function (id) { replaceRow(id, data.rows[id]); });
      updateCounts(data.counts);
      const stillWatching = rows().some(function (row) { return row.hasAttribute("data-poll"); });
      delay = stillWatching ? 3000 : 20000; // fast while something is classifying, gentle otherwise
    } catch (err) {
      delay = Math.min(delay * 2, 60000);
    }
    window.setTimeout(poll, delay);
  }
  const anyProcessing = rows().some(function (row) { return row.hasAttribute("data-poll"); });
  window.setTimeout(poll, anyProcessing ? 2000 : 20000);
})();
