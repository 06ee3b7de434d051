// The radiograph viewer: one or two panes, each a canvas drawn from the image's own pixels (a 12- or 16-bit
// DICOM keeps every level), with zoom, pan, a real window/level in the image's units (presets from the
// image's histogram), invert, the model's boxes (SVG, in original-image pixels) and the heatmap overlay.
// Switching images changes what a pane draws; the view (zoom, window, invert, layout) is kept.
// One file over 400 lines on purpose: a Pane (one canvas, its pixels, window/level, boxes and heatmap) and
// the viewer around the panes (layout, the shared view, pointer and keyboard) share the view state and the
// pixel cache in one closure; split, both would have to be published on window.FR for the other file.
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const MIN_SCALE = 0.05;
  const MAX_SCALE = 16;
  const SVG = "http://www.w3.org/2000/svg";

  // Pixels already fetched, newest last; a study of 20 images fits, a long session does not grow forever.
  const pixelCache = new Map();
  const CACHE_SIZE = 24;

  function loadPixels(url) {
    if (pixelCache.has(url)) {
      const hit = pixelCache.get(url);
      pixelCache.delete(url);
      pixelCache.set(url, hit);
      return hit;
    }
    const pending = fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) throw new Error("The image could not be loaded (" + response.status + ").");
      const header = JSON.parse(response.headers.get("X-Pixels"));
      return response.arrayBuffer().then(function (buffer) {
        const pixels = header.bytes_per_pixel === 2 ? new Uint16Array(buffer) : new Uint8Array(buffer);
        if (pixels.length !== header.width * header.height) throw new Error("The image data is incomplete.");
        return { header: header, pixels: pixels };
      });
    });
    pending.catch(function () { pixelCache.delete(url); });
    pixelCache.set(url, pending);
    while (pixelCache.size > CACHE_SIZE) pixelCache.delete(pixelCache.keys().next().value);
    return pending;
  }

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  // What is kept across images of the study.
  const view = {
    layout: 1,
    compare: null, // the image the reader chose for the second pane in 2-up (null: the next one)
    invert: false,
    boxes: null, // null: the model card's default for the image's model
    heatmap: false,
    opacity: 45,
    zoom: 1, // relative to fit
    fitted: true,
    cx: 0.5, cy: 0.5, // the image point at the pane's centre, as a fraction of its size
    windowMode: "default", // a preset name, or "manual"
    window: null, // {center, width, bits} when manual
  };

  function Pane(root) {
    this.root = root;
    this.stage = root.querySelector(".stage");
    this.canvas = root.querySelector("canvas.xray");
    this.context = this.canvas.getContext("2d");
    this.heatmap = root.querySelector("img.heatmap");
    this.svg = root.querySelector("svg.boxes");
    this.hudImage = root.querySelector("[data-hud-image]");
    this.hudZoom = root.querySelector("[data-hud-zoom]");
    this.image = null;
    this.data = null;
    this.imageData = null;
    this.window = { center: 128, width: 256 };
    this.scale = 1;
    this.x = 0;
    this.y = 0;
    this.token = 0;
  }

  Pane.prototype.width = function () { return this.data ? this.data.header.width : (this.image ? this.image.width : 1); };
  Pane.prototype.height = function () { return this.data ? this.data.header.height : (this.image ? this.image.height : 1); };

  Pane.prototype.show = function (image) {
    const pane = this;
    const token = ++this.token;
    const same = this.image && this.image.id === image.id && this.data;
    this.image = image;
    this.root.dataset.image = String(image.id);
    this.hudImage.textContent = "Image " + image.number + " · " + image.width + "×" + image.height + " " + image.format +
      (image.view ? " · " + image.view : "") + (image.laterality ? " " + image.laterality : "");
    this.drawOverlays();
    if (same) return Promise.resolve();
    this.root.dataset.ready = "no";
    this.root.classList.remove("load-failed");
    return loadPixels(image.pixels_url).then(function (data) {
      if (token !== pane.token) return;
      pane.data = data;
      pane.canvas.width = data.header.width;
      pane.canvas.height = data.header.height;
      pane.imageData = pane.context.createImageData(data.header.width, data.header.height);
      pane.applyWindowMode();
      pane.placeFromView();
      pane.paint();
      pane.drawOverlays();
      pane.root.dataset.ready = "yes";
      pane.root.dispatchEvent(new CustomEvent("fr:shown", { bubbles: true, detail: { image: image.id } }));
    }).catch(function (error) {
      if (token !== pane.token) return;
      pane.root.dataset.ready = "error";
      pane.root.classList.add("load-failed");
      pane.hudImage.textContent = error.message;
    });
  };

  Pane.prototype.applyWindowMode = function () {
    const header = this.data.header;
    if (view.windowMode === "manual" && view.window && view.window.bits === header.bits) {
      this.window = { center: view.window.center, width: view.window.width };
    } else {
      const preset = header.presets[view.windowMode] || header.presets["default"] || header.window;
      this.window = { center: preset.center, width: preset.width };
      if (view.windowMode === "manual") view.windowMode = "default";
    }
  };

  // Every stored level through one lookup table: out = (value - (centre - width / 2)) / width, clamped.
  Pane.prototype.paint = function () {
    if (!this.data) return;
    const header = this.data.header;
    const size = header.max_value + 1;
    const lut = new Uint32Array(size);
    const width = Math.max(1, this.window.width);
    const low = this.window.center - width / 2;
    const invert = header.invert !== view.invert; // MONOCHROME1 is stored inverted: shown flipped by default
    for (let v = 0; v < size; v++) {
      let g = ((v - low) / width) * 255;
      g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
      if (invert) g = 255 - g;
      lut[v] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
    const out = new Uint32Array(this.imageData.data.buffer);
    const pixels = this.data.pixels;
    for (let i = 0; i < pixels.length; i++) out[i] = lut[pixels[i]];
    this.context.putImageData(this.imageData, 0, 0);
    this.root.dataset.window = Math.round(this.window.width) + "/" + Math.round(this.window.center);
    this.root.dataset.invert = view.invert ? "yes" : "no";
  };

  Pane.prototype.fitScale = function () {
    return Math.min(this.root.clientWidth / this.width(), this.root.clientHeight / this.height()) || 1;
  };

  Pane.prototype.placeFromView = function () {
    const fit = this.fitScale();
    this.scale = clamp(view.fitted ? fit : fit * view.zoom, MIN_SCALE, MAX_SCALE);
    this.x = this.root.clientWidth / 2 - view.cx * this.width() * this.scale;
    this.y = this.root.clientHeight / 2 - view.cy * this.height() * this.scale;
    this.place();
  };

  Pane.prototype.rememberView = function () {
    view.zoom = this.scale / this.fitScale();
    view.cx = (this.root.clientWidth / 2 - this.x) / (this.width() * this.scale);
    view.cy = (this.root.clientHeight / 2 - this.y) / (this.height() * this.scale);
  };

  Pane.prototype.place = function () {
    const w = this.width();
    const h = this.height();
    this.stage.style.width = w + "px";
    this.stage.style.height = h + "px";
    this.stage.style.transform = "translate(" + this.x + "px, " + this.y + "px) scale(" + this.scale + ")";
    this.stage.classList.toggle("pixelated", !view.fitted && this.scale >= 3);
    this.root.dataset.scale = this.scale.toFixed(4);
    // Zoom relative to "fit": what is kept when the next image (of another size) is shown.
    this.root.dataset.zoom = (this.scale / this.fitScale()).toFixed(3);
    this.hudZoom.textContent = (view.fitted ? "Fit · " : "") + Math.round(this.scale * 100) + " %";
  };

  Pane.prototype.boxesOn = function () {
    const prediction = this.image && this.image.prediction;
    if (!prediction) return false;
    return view.boxes === null ? !!prediction.boxes_default : view.boxes;
  };

  Pane.prototype.drawOverlays = function () {
    const prediction = this.image && this.image.prediction;
    const w = this.image ? this.image.width : 1;
    const h = this.image ? this.image.height : 1;
    // Boxes: the stored coordinates are the image's own pixels, the same frame as the canvas.
    while (this.svg.firstChild) this.svg.removeChild(this.svg.firstChild);
    const boxes = prediction ? prediction.boxes : [];  // stored strongest first
    this.svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    this.svg.setAttribute("width", String(w));
    this.svg.setAttribute("height", String(h));
    const font = Math.max(12, Math.round(Math.max(w, h) / 45));
    boxes.forEach(function (box, index) {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(box.x0));
      rect.setAttribute("y", String(box.y0));
      rect.setAttribute("width", String(box.x1 - box.x0));
      rect.setAttribute("height", String(box.y1 - box.y0));
      rect.setAttribute("class", "box");
      rect.setAttribute("data-box", String(index));
      this.svg.appendChild(rect);
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", String(box.x0 + font * 0.2));
      label.setAttribute("y", String(Math.max(font, box.y0 - font * 0.3)));
      label.setAttribute("font-size", String(font));
      label.setAttribute("class", "box-label");
      // Numbered from the strongest, not labelled "97 %": a box's score is its best cell's uncalibrated
      // strength, and read as a percentage beside the calibrated probability it would contradict it.
      label.textContent = String(index + 1);
      const title = document.createElementNS(SVG, "title");
      title.textContent = "Box " + (index + 1) + ": cell score " + box.score.toFixed(2) + " (a ranking, not a probability)";
      rect.appendChild(title);
      this.svg.appendChild(label);
    }, this);
    // An <svg> has no `hidden` property (it is not an HTML element): the attribute itself is toggled.
    const hide = !this.boxesOn() || boxes.length === 0;
    this.svg.toggleAttribute("hidden", hide);
    this.root.dataset.boxes = hide ? "off" : String(boxes.length);
    // The heatmap, only when the model card validates it and the reader asks for it.
    const url = prediction && prediction.heatmap_url;
    if (url && view.heatmap) {
      if (this.heatmap.getAttribute("src") !== url) this.heatmap.setAttribute("src", url);
      this.heatmap.style.opacity = String(view.opacity / 100);
      this.heatmap.hidden = false;
    } else {
      this.heatmap.hidden = true;
    }
    this.root.dataset.heatmap = this.heatmap.hidden ? "off" : "on";
  };

  Pane.prototype.zoomAt = function (scale, cx, cy) {
    scale = clamp(scale, MIN_SCALE, MAX_SCALE);
    this.x = cx - ((cx - this.x) * scale) / this.scale;
    this.y = cy - ((cy - this.y) * scale) / this.scale;
    this.scale = scale;
    view.fitted = false;
    this.place();
    this.rememberView();
  };

  Pane.prototype.pan = function (dx, dy) {
    this.x += dx;
    this.y += dy;
    view.fitted = false;
    this.place();
    this.rememberView();
  };

  // --- The viewer: panes, shared controls, keyboard and pointer --------------------------------------------

  const root = document.getElementById("viewers");
  if (!root) return;
  const panes = Array.prototype.map.call(root.querySelectorAll(".viewer"), function (node) { return new Pane(node); });
  const readout = document.getElementById("wl-readout");
  const legend = document.getElementById("heatmap-legend");
  const compareSelect = document.getElementById("compare-select");
  let active = panes[0];
  let images = [];
  let current = null;

  function pressed(action, on) {
    const button = document.querySelector('[data-action="' + action + '"]');
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function visiblePanes() {
    return panes.slice(0, view.layout);
  }

  function refreshControls() {
    const w = active.window;
    const header = active.data && active.data.header;
    readout.textContent = header
      ? "W " + Math.round(w.width) + " · L " + Math.round(w.center - header.offset) + (header.bits > 8 ? " (" + header.bits + "-bit)" : "")
      : "W — L —";
    document.querySelectorAll("[data-preset]").forEach(function (button) {
      button.setAttribute("aria-pressed", view.windowMode === button.dataset.preset ? "true" : "false");
    });
    pressed("invert", view.invert);
    pressed("layout", view.layout === 2);
    compareSelect.closest("[data-compare-control]").hidden = view.layout !== 2;
    compareSelect.value = view.compare === null ? "" : String(view.compare);
    pressed("boxes", active.boxesOn());
    const prediction = current && current.prediction;
    const boxesButton = document.querySelector('[data-action="boxes"]');
    boxesButton.disabled = !prediction || prediction.boxes.length === 0;
    const heatmapButton = document.querySelector('[data-action="heatmap"]');
    heatmapButton.hidden = !(prediction && prediction.heatmap_url);
    pressed("heatmap", view.heatmap);
    legend.hidden = !(prediction && prediction.heatmap_url && view.heatmap);
    root.dataset.layout = String(view.layout);
  }

  function paintAll() {
    visiblePanes().forEach(function (pane) {
      if (pane !== active && pane.data && active.data && pane.data.header.bits === active.data.header.bits &&
          view.windowMode === "manual") {
        pane.window = { center: active.window.center, width: active.window.width };
      } else if (pane !== active && pane.data) {
        pane.applyWindowMode();
      }
      pane.paint();
    });
    refreshControls();
  }

  function setWindow(center, width) {
    if (!active.data) return;
    const max = active.data.header.max_value;
    active.window = { center: clamp(center, -max, 2 * max), width: clamp(width, 1, 2 * max + 2) };
    view.windowMode = "manual";
    view.window = { center: active.window.center, width: active.window.width, bits: active.data.header.bits };
    schedulePaint();
  }

  let paintQueued = false;
  function schedulePaint() {
    if (paintQueued) return;
    paintQueued = true;
    window.requestAnimationFrame(function () { paintQueued = false; paintAll(); });
  }

  function setPreset(name) {
    view.windowMode = name;
    visiblePanes().forEach(function (pane) { if (pane.data) pane.applyWindowMode(); });
    paintAll();
  }

  function neighbourOf(image) {
    const index = images.indexOf(image);
    if (index < 0) return null;
    return images[index + 1] || images[index - 1] || null;
  }

  // The second pane's image in 2-up: the one the reader chose (kept across image switches), else, and while
  // the chosen one is the image on screen, the next image of the study.
  function partnerOf(image) {
    if (view.compare !== null && view.compare !== image.id) {
      const chosen = images.find(function (i) { return i.id === view.compare; });
      if (chosen) return chosen;
    }
    return neighbourOf(image);
  }

  function markCompared(other) {
    document.querySelectorAll(".thumb[data-image]").forEach(function (thumb) {
      const on = !!other && view.layout === 2 && Number(thumb.dataset.image) === other.id;
      thumb.classList.toggle("compared", on);
      if (on) thumb.setAttribute("data-compared", "yes"); else thumb.removeAttribute("data-compared");
    });
  }

  // Show an image in the first pane (the second pane, in 2-up, shows the image chosen for it).
  function show(image) {
    current = image;
    panes[0].show(image);
    let other = null;
    if (view.layout === 2) {
      other = partnerOf(image);
      panes[1].root.hidden = !other;
      if (other) panes[1].show(other);
    }
    markCompared(other);
    active = panes[0];
    const next = neighbourOf(image);
    if (next) loadPixels(next.pixels_url); // the next switch draws from memory
    refreshControls();
  }

  // A pane finished drawing a new image: the read-out and the buttons describe it.
  root.addEventListener("fr:shown", refreshControls);

  function setLayout(layout) {
    view.layout = layout;
    panes[1].root.hidden = layout !== 2;
    root.dataset.layout = String(layout);
    window.requestAnimationFrame(function () {
      if (current) show(current);
      visiblePanes().forEach(function (pane) { if (pane.data) pane.placeFromView(); });
    });
    refreshControls();
  }

  // The reader chooses the second pane's image: a thumbnail (Shift+click, Shift+Enter), { / }, or the
  // toolbar's list. Choosing one opens 2-up.
  function compareWith(id) {
    view.compare = id === null || id === undefined || Number.isNaN(id) ? null : id;
    if (view.layout !== 2) setLayout(2);
    else if (current) show(current);
    refreshControls();
  }

  function compareStep(offset) {
    if (!current || images.length < 2) return;
    const shown = view.layout === 2 && panes[1].image ? panes[1].image : current;
    let index = images.indexOf(images.find(function (i) { return i.id === shown.id; }));
    do { index += offset; } while (images[index] && images[index].id === current.id);
    const next = images[index];
    if (next) compareWith(next.id);
  }

  let compareOptions = "";
  function fillCompareSelect() {
    const key = images.map(function (i) { return i.id + ":" + i.number + ":" + i.view + ":" + i.laterality; }).join(",");
    if (key === compareOptions) return;
    compareOptions = key;
    const chosen = compareSelect.value;
    while (compareSelect.options.length > 1) compareSelect.remove(1);
    images.forEach(function (image) {
      const label = "Image " + image.number + (image.view ? " · " + image.view : "") +
        (image.laterality ? " " + image.laterality : "");
      compareSelect.add(new Option(label, String(image.id)));
    });
    compareSelect.value = chosen;
  }

  compareSelect.addEventListener("change", function () {
    compareWith(compareSelect.value === "" ? null : Number(compareSelect.value));
  });

  function fit() {
    view.fitted = true;
    view.zoom = 1;
    view.cx = 0.5;
    view.cy = 0.5;
    visiblePanes().forEach(function (pane) { pane.placeFromView(); });
  }

  function zoomBy(factor) {
    active.zoomAt(active.scale * factor, active.root.clientWidth / 2, active.root.clientHeight / 2);
    syncOthers();
  }

  function syncOthers() {
    visiblePanes().forEach(function (pane) { if (pane !== active && pane.data) pane.placeFromView(); });
  }

  function reset() {
    view.invert = false;
    view.heatmap = false;
    view.boxes = null;
    view.windowMode = "default";
    visiblePanes().forEach(function (pane) { if (pane.data) pane.applyWindowMode(); pane.drawOverlays(); });
    fit();
    paintAll();
  }

  function toggleBoxes() {
    view.boxes = !active.boxesOn();
    visiblePanes().forEach(function (pane) { pane.drawOverlays(); });
    refreshControls();
  }

  function toggleHeatmap() {
    if (!(current && current.prediction && current.prediction.heatmap_url)) return;
    view.heatmap = !view.heatmap;
    visiblePanes().forEach(function (pane) { pane.drawOverlays(); });
    refreshControls();
  }

  function setOpacity(value) {
    view.opacity = clamp(value, 5, 100);
    view.heatmap = true;
    visiblePanes().forEach(function (pane) { pane.drawOverlays(); });
    refreshControls();
  }

  const actions = {
    "zoom-in": function () { zoomBy(1.25); },
    "zoom-out": function () { zoomBy(0.8); },
    fit: fit,
    actual: function () { active.zoomAt(1, active.root.clientWidth / 2, active.root.clientHeight / 2); syncOthers(); },
    invert: function () { view.invert = !view.invert; paintAll(); },
    boxes: toggleBoxes,
    heatmap: toggleHeatmap,
    layout: function () { setLayout(view.layout === 2 ? 1 : 2); },
    reset: reset,
  };

  document.querySelectorAll(".toolbar [data-action]").forEach(function (button) {
    button.addEventListener("click", function () { actions[button.dataset.action](); });
  });
  document.querySelectorAll("[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () { setPreset(button.dataset.preset); });
  });

  panes.forEach(function (pane) {
    const node = pane.root;
    node.addEventListener("wheel", function (event) {
      event.preventDefault();
      active = pane;
      const box = node.getBoundingClientRect();
      const factor = Math.exp(-clamp(event.deltaY, -200, 200) * 0.0015);
      pane.zoomAt(pane.scale * factor, event.clientX - box.left, event.clientY - box.top);
      syncOthers();
    }, { passive: false });
    let drag = null;
    node.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 && event.button !== 2) return;
      active = pane;
      const windowLevel = event.button === 2 || event.shiftKey;
      drag = { id: event.pointerId, x: event.clientX, y: event.clientY, windowLevel: windowLevel,
        center: pane.window.center, width: pane.window.width };
      node.setPointerCapture(event.pointerId);
      node.classList.add(windowLevel ? "adjusting" : "panning");
      node.focus({ preventScroll: true });
    });
    node.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.windowLevel) {
        // Across the pane: the whole range of levels; right widens the window, down raises the level.
        const range = pane.data ? pane.data.header.max_value + 1 : 256;
        setWindow(drag.center + (dy / node.clientHeight) * range, drag.width + (dx / node.clientWidth) * range);
      } else {
        pane.pan(dx, dy);
        syncOthers();
        drag.x = event.clientX;
        drag.y = event.clientY;
      }
    });
    function endDrag(event) {
      if (!drag || event.pointerId !== drag.id) return;
      drag = null;
      node.classList.remove("adjusting", "panning");
    }
    node.addEventListener("pointerup", endDrag);
    node.addEventListener("pointercancel", endDrag);
    node.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    node.addEventListener("dblclick", fit);
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || FR.isTyping(event)) return;
    const overrideOpen = typeof FR.overrideOpen === "function" && FR.overrideOpen();
    if (event.altKey) {
      const preset = { "1": "bone", "2": "soft", "3": "full", "0": "default" }[event.key] ||
        { Digit1: "bone", Digit2: "soft", Digit3: "full", Digit0: "default" }[event.code];
      if (preset) { setPreset(preset); event.preventDefault(); }
      return;
    }
    const step = event.shiftKey ? 200 : 50;
    const range = active.data ? active.data.header.max_value + 1 : 256;
    let handled = true;
    switch (event.key) {
      case "h": case "H": toggleHeatmap(); break;
      case "b": case "B": toggleBoxes(); break;
      case ",": case "<": setOpacity(view.opacity - 10); break;
      case ".": case ">": setOpacity(view.opacity + 10); break;
      case "i": case "I": actions.invert(); break;
      case "r": case "R": reset(); break;
      case "f": case "F": fit(); break;
      case "+": case "=": zoomBy(1.25); break;
      case "-": case "_": zoomBy(0.8); break;
      case "w": setWindow(active.window.center, active.window.width * 0.85); break;
      case "W": setWindow(active.window.center, active.window.width / 0.85); break;
      case "l": setWindow(active.window.center + range / 50, active.window.width); break;
      case "L": setWindow(active.window.center - range / 50, active.window.width); break;
      case "1": if (overrideOpen) handled = false; else actions.actual(); break;
      case "2": if (overrideOpen) handled = false; else actions.layout(); break;
      case "}": compareStep(1); break;
      case "{": compareStep(-1); break;
      case "ArrowLeft": case "ArrowRight": case "ArrowUp": case "ArrowDown":
        if (FR.inFormControl(event)) { handled = false; break; }
        active.pan(event.key === "ArrowLeft" ? step : event.key === "ArrowRight" ? -step : 0,
          event.key === "ArrowUp" ? step : event.key === "ArrowDown" ? -step : 0);
        syncOthers();
        break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  let resizeTimer = 0;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () {
      visiblePanes().forEach(function (pane) { if (pane.data) pane.placeFromView(); });
    }, 100);
  });

  FR.viewer = {
    setImages: function (list) {
      images = list;
      fillCompareSelect();
    },
    show: show,
    compareWith: compareWith,
    // The current image's record changed (a prediction arrived, a review): redraw overlays, keep the view.
    refresh: function (list, image) {
      images = list;
      fillCompareSelect();
      current = image;
      panes.forEach(function (pane) {
        if (!pane.image) return;
        const fresh = list.find(function (i) { return i.id === pane.image.id; });
        if (fresh) { pane.image = fresh; pane.drawOverlays(); }
      });
      refreshControls();
    },
    state: view,
    fit: fit,
    reset: reset,
    setPreset: setPreset,
    setWindow: setWindow,
    activeWindow: function () { return { center: active.window.center, width: active.window.width }; },
    loaded: loadPixels,
  };
})();
