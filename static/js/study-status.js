// While radiographs of a study are being classified, polls the status endpoint and updates the
// thumbnails in place. Reloads only when the radiograph on screen gets its result (or fails): nothing
// the clinician is doing on a radiograph that already has a result is ever thrown away.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root || root.dataset.state !== "processing") return;
  const url = root.dataset.statusUrl;
  const selected = Number(root.dataset.selected);
  const selectedReady = root.dataset.selectedReady === "yes";
  // A radiograph is usually classified well under a second after upload (docs/performance.md): look
  // soon, then every 0.7 s while the study is processing.
  const INTERVAL = 700;
  let delay = INTERVAL;

  function caption(radiograph) {
    const thumb = document.getElementById("thumb-" + radiograph.id);
    const node = thumb && thumb.querySelector("[data-thumb-status]");
    if (!node) return;
    const number = node.querySelector(".thumb-number");
    node.textContent = "";
    if (number) node.appendChild(number);
    if (radiograph.prediction) {
      const dot = document.createElement("span");
      dot.className = "dot " + (radiograph.prediction.label === "fractured" ? "dot-likely" : "dot-unlikely");
      node.appendChild(dot);
      node.appendChild(document.createTextNode(radiograph.prediction.probability.toFixed(2)));
    } else {
      node.appendChild(document.createTextNode(radiograph.status_display));
    }
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      const study = await response.json();
      for (const radiograph of study.radiographs) {
        if (radiograph.id === selected && !selectedReady && (radiograph.prediction || radiograph.status === "failed")) {
          window.location.reload();
          return;
        }
        caption(radiograph);
      }
      const state = document.getElementById("study-state");
      state.textContent = study.state_display;
      state.className = "state state-" + study.state;
      if (study.state !== "processing") return;
      delay = INTERVAL;
    } catch (err) {
      delay = Math.min(delay * 2, 15000); // back off while the server is unreachable
    }
    window.setTimeout(poll, delay);
  }
  window.setTimeout(poll, 300);
})();
