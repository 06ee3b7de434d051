// The radiograph viewer: zoom (wheel, buttons, keys), pan (drag, arrows), window/level (sliders,
// right-drag, keys), invert, fit and 1:1, and the model's heatmap overlay with its opacity.
// Window/level is an exact linear transfer function (an SVG filter), not an approximation with CSS
// brightness/contrast: out = (value - (level - window/2)) / window, clamped to [0, 1].
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const stage = document.getElementById("stage");
  const xray = document.getElementById("xray");
  const heatmap = document.getElementById("heatmap");
  const opacityInput = document.getElementById("opacity");
  const windowInput = document.getElementById("window");
  const levelInput = document.getElementById("level");
  const hudZoom = document.getElementById("hud-zoom");
  const hudWindowLevel = document.getElementById("hud-wl");
  const transfer = document.querySelectorAll("#window-level feFuncR, #window-level feFuncG, #window-level feFuncB");
  const MIN_SCALE = 0.05;
  const MAX_SCALE = 16;
  const DEFAULTS = { window: 100, level: 50, opacity: 45 };

  const view = {
    scale: 1, x: 0, y: 0, fitted: true, invert: false,
    window: DEFAULTS.window, level: DEFAULTS.level,
    heatmap: !!heatmap, opacity: DEFAULTS.opacity,
  };
  let width = Number(xray.getAttribute("width")) || 512;
  let height = Number(xray.getAttribute("height")) || 512;

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  function pressed(action, on) {
    const button = document.querySelector('[data-action="' + action + '"]');
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function render() {
    stage.style.width = width + "px";
    stage.style.height = height + "px";
    stage.style.transform = "translate(" + view.x + "px, " + view.y + "px) scale(" + view.scale + ")";
    viewer.dataset.scale = view.scale.toFixed(4);
    hudZoom.textContent = (view.fitted ? "Fit · " : "") + Math.round(view.scale * 100) + " %";
    // Zoomed in past 3x, show the pixels as they are rather than smoothed: what a reader zooms in to check.
    stage.classList.toggle("pixelated", !view.fitted && view.scale >= 3);

    const w = view.window / 100;
    const low = view.level / 100 - w / 2;
    let slope = 1 / w;
    let intercept = -low / w;
    if (view.invert) {
      slope = -slope;
      intercept = 1 - intercept;
    }
    transfer.forEach(function (node) {
      node.setAttribute("slope", slope.toFixed(5));
      node.setAttribute("intercept", intercept.toFixed(5));
    });
    const identity = !view.invert && view.window === DEFAULTS.window && view.level === DEFAULTS.level;
    // The filter costs a repaint per frame while panning; only switch it on when it changes something.
    xray.classList.toggle("window-level", !identity);
    viewer.dataset.invert = view.invert ? "yes" : "no";
    hudWindowLevel.textContent = "W " + view.window + " · L " + view.level + (view.invert ? " · inverted" : "");
    windowInput.value = String(view.window);
    levelInput.value = String(view.level);
    pressed("invert", view.invert);

    if (heatmap) {
      heatmap.hidden = !view.heatmap;
      heatmap.style.opacity = String(view.opacity / 100);
      opacityInput.value = String(view.opacity);
      viewer.dataset.heatmap = view.heatmap ? "on" : "off";
      pressed("heatmap", view.heatmap);
    }
  }

  function fitScale() {
    return Math.min(viewer.clientWidth / width, viewer.clientHeight / height);
  }

  function fit() {
    view.scale = clamp(fitScale(), MIN_SCALE, MAX_SCALE);
    view.x = (viewer.clientWidth - width * view.scale) / 2;
    view.y = (viewer.clientHeight - height * view.scale) / 2;
    view.fitted = true;
    render();
  }

  function zoomAt(scale, cx, cy) {
    scale = clamp(scale, MIN_SCALE, MAX_SCALE);
    view.x = cx - ((cx - view.x) * scale) / view.scale;
    view.y = cy - ((cy - view.y) * scale) / view.scale;
    view.scale = scale;
    view.fitted = false;
    render();
  }

  function zoomBy(factor) {
    zoomAt(view.scale * factor, viewer.clientWidth / 2, viewer.clientHeight / 2);
  }

  function actualSize() {
    zoomAt(1, viewer.clientWidth / 2, viewer.clientHeight / 2);
  }

  function pan(dx, dy) {
    view.x += dx;
    view.y += dy;
    view.fitted = false;
    render();
  }

  function setWindowLevel(windowValue, levelValue) {
    view.window = Math.round(clamp(windowValue, 5, 200));
    view.level = Math.round(clamp(levelValue, 0, 100));
    render();
  }

  function toggleHeatmap() {
    if (!heatmap) return;
    view.heatmap = !view.heatmap;
    render();
  }

  function setOpacity(value) {
    if (!heatmap) return;
    view.opacity = clamp(value, 0, 100);
    view.heatmap = true;
    render();
  }

  function reset() {
    view.invert = false;
    view.window = DEFAULTS.window;
    view.level = DEFAULTS.level;
    view.opacity = DEFAULTS.opacity;
    view.heatmap = !!heatmap;
    fit();
  }

  const actions = {
    "zoom-in": function () { zoomBy(1.25); },
    "zoom-out": function () { zoomBy(0.8); },
    fit: fit,
    actual: actualSize,
    invert: function () { view.invert = !view.invert; render(); },
    heatmap: toggleHeatmap,
    reset: reset,
  };

  document.querySelectorAll(".toolbar [data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      actions[button.dataset.action]();
    });
  });
  opacityInput.addEventListener("input", function () { setOpacity(Number(opacityInput.value)); });
  windowInput.addEventListener("input", function () { setWindowLevel(Number(windowInput.value), view.level); });
  levelInput.addEventListener("input", function () { setWindowLevel(view.window, Number(levelInput.value)); });

  viewer.addEventListener(
    "wheel",
    function (event) {
      event.preventDefault();
      const box = viewer.getBoundingClientRect();
      const factor = Math.exp(-clamp(event.deltaY, -200, 200) * 0.0015);
      zoomAt(view.scale * factor, event.clientX - box.left, event.clientY - box.top);
    },
    { passive: false }
  );

  // Left-drag pans; right-drag (or Shift+drag) changes window (left/right) and level (up/down).
  let drag = null;
  viewer.addEventListener("pointerdown", function (event) {
    if (event.button !== 0 && event.button !== 2) return;
    const windowLevel = event.button === 2 || event.shiftKey;
    drag = { id: event.pointerId, x: event.clientX, y: event.clientY, windowLevel: windowLevel,
      window: view.window, level: view.level };
    viewer.setPointerCapture(event.pointerId);
    viewer.classList.add(windowLevel ? "adjusting" : "panning");
    viewer.focus({ preventScroll: true });
  });
  viewer.addEventListener("pointermove", function (event) {
    if (!drag || event.pointerId !== drag.id) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.windowLevel) {
      setWindowLevel(drag.window + dx * 0.4, drag.level + dy * 0.25);
    } else {
      pan(dx, dy);
      drag.x = event.clientX;
      drag.y = event.clientY;
    }
  });
  function endDrag(event) {
    if (!drag || event.pointerId !== drag.id) return;
    drag = null;
    viewer.classList.remove("adjusting", "panning");
  }
  viewer.addEventListener("pointerup", endDrag);
  viewer.addEventListener("pointercancel", endDrag);
  viewer.addEventListener("contextmenu", function (event) { event.preventDefault(); });
  viewer.addEventListener("dblclick", fit);

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || FR.isTyping(event)) return;
    // Digits belong to the override form's reasons while it is open.
    const overrideOpen = typeof FR.overrideOpen === "function" && FR.overrideOpen();
    const step = event.shiftKey ? 200 : 50;
    let handled = true;
    switch (event.key) {
      case "h": case "H": toggleHeatmap(); break;
      case ",": case "<": setOpacity(view.opacity - 10); break;
      case ".": case ">": setOpacity(view.opacity + 10); break;
      case "i": case "I": actions.invert(); break;
      case "r": case "R": reset(); break;
      case "f": case "F": fit(); break;
      case "+": case "=": zoomBy(1.25); break;
      case "-": case "_": zoomBy(0.8); break;
      case "w": setWindowLevel(view.window - 5, view.level); break;
      case "W": setWindowLevel(view.window + 5, view.level); break;
      case "l": setWindowLevel(view.window, view.level + 3); break;
      case "L": setWindowLevel(view.window, view.level - 3); break;
      case "1": if (overrideOpen) handled = false; else actualSize(); break;
      case "ArrowLeft": case "ArrowRight": case "ArrowUp": case "ArrowDown":
        // Arrow keys move between radio buttons and sliders when one has focus.
        if (FR.inFormControl(event)) { handled = false; break; }
        pan(event.key === "ArrowLeft" ? step : event.key === "ArrowRight" ? -step : 0,
          event.key === "ArrowUp" ? step : event.key === "ArrowDown" ? -step : 0);
        break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  let resizeTimer = 0;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () { if (view.fitted) fit(); else render(); }, 100);
  });

  function start() {
    width = xray.naturalWidth || width;
    height = xray.naturalHeight || height;
    fit();
    viewer.dataset.ready = "yes";
  }
  if (xray.complete && xray.naturalWidth) start();
  else {
    render();
    xray.addEventListener("load", start);
    xray.addEventListener("error", function () {
      viewer.dataset.ready = "error";
      viewer.classList.add("load-failed");
    });
  }
  FR.viewer = { fit: fit, zoomBy: zoomBy, toggleHeatmap: toggleHeatmap, reset: reset, state: view };
})();
