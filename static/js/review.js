// The study review page: every image of the study in acquisition order, switched without a page load.
// C arms "confirm the study" (Enter records it), Shift+C confirms the image on screen, O opens the override
// form (the reasons shown are those that fit the final label; 1–9 pick one, Ctrl+Enter records it).
// Blinded reading: Y / X record the reader's own call (fracture / no fracture) on every image not yet
// called (Shift: this image only) before the model's band and boxes arrive from the server.
// ] / [ move through the images, N / P through the queue, Q back to the queue. Results arriving and
// colleagues' reviews update the page in place. The server checks every rule again.
// One file over 400 lines on purpose: the page's rendering, its actions and the polling all read and write
// the same study state (the study, the image on screen, an armed confirmation) in one closure; the viewer
// it drives is its own file (viewer.js, through FR.viewer).
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const root = document.getElementById("review");
  const dataNode = document.getElementById("study-data");
  if (!root || !dataNode || !FR.viewer) return;

  let study = JSON.parse(dataNode.textContent);
  let current = null;
  let armed = false;
  let busy = false;

  const $ = function (id) { return document.getElementById(id); };
  const flash = $("flash");
  const confirmForm = $("confirm-form");
  const confirmButton = $("confirm-button");
  const confirmHint = $("confirm-hint");
  const details = $("override");
  const overrideForm = $("override-form");
  const notes = $("id_reason_text");
  const problem = $("override-problem");
  const unaidedForm = $("unaided-form");
  const confirmImageForm = $("confirm-image-form");

  function csrf(form) {
    return form.querySelector('input[name="csrfmiddlewaretoken"]').value;
  }

  function imageById(id) {
    return study.images.find(function (image) { return image.id === id; }) || null;
  }

  function say(text, kind) {
    flash.textContent = text;
    flash.className = "status-line " + (kind || "ok");
    flash.hidden = !text;
  }

  // --- Rendering ---------------------------------------------------------------------------------------

  function renderThumbs() {
    study.images.forEach(function (image) {
      const thumb = $("thumb-" + image.id);
      if (!thumb) return;
      thumb.classList.toggle("awaiting", image.awaiting);
      thumb.toggleAttribute("aria-current", current && image.id === current.id);
      if (current && image.id === current.id) thumb.setAttribute("aria-current", "true");
      const caption = thumb.querySelector("[data-thumb-caption]");
      caption.textContent = "";
      const number = document.createElement("span");
      number.className = "thumb-number";
      number.textContent = String(image.number);
      caption.appendChild(number);
      const where = [image.view, image.laterality].filter(Boolean).join(" ");
      if (where) caption.appendChild(document.createTextNode(" " + where + " "));
      if (image.prediction) {
        const dot = document.createElement("span");
        dot.className = "dot band-" + image.prediction.band;
        dot.title = image.prediction.text;
        caption.appendChild(dot);
      } else if (image.hidden) {
        caption.appendChild(document.createTextNode("· your call"));
      } else if (image.status !== "predicted") {
        caption.appendChild(document.createTextNode(image.status_display));
      }
      if (image.reviews.length) {
        const tick = document.createElement("span");
        tick.className = "tick";
        tick.title = "Reviewed";
        tick.textContent = "✓";
        caption.appendChild(tick);
      }
    });
  }

  function renderSummary() {
    const node = $("study-summary");
    node.textContent = "";
    if (study.summary) {
      const badge = document.createElement("span");
      badge.className = "badge verdict band-" + study.summary.band;
      badge.textContent = study.summary.text;
      node.appendChild(badge);
      const breakdown = document.createElement("span");
      breakdown.className = "muted";
      breakdown.textContent = " " + study.summary.breakdown;
      node.appendChild(breakdown);
    }
    if (study.outcome) {
      const outcome = document.createElement("span");
      outcome.className = "outcome";
      outcome.textContent = " " + study.outcome;
      node.appendChild(outcome);
    }
    const state = $("study-state");
    state.textContent = study.state_display;
    state.className = "state state-" + study.state;
    const colleague = $("colleague");
    if (study.colleague !== undefined) {
      colleague.hidden = !study.colleague;
      colleague.textContent = study.colleague ? study.colleague + " is reading this study right now." : "";
    }
  }

  function show(node, on) { node.hidden = !on; }

  function renderModel(image) {
    $("model-image-label").textContent = "image " + image.number + " of " + study.images.length;
    const prediction = image.prediction;
    show($("model-hidden"), image.hidden);
    show($("model-result"), !!prediction);
    show($("model-pending"), !prediction && !image.hidden && (image.status === "queued" || image.status === "running"));
    show($("model-failed"), image.status === "failed" || image.status === "not_analysed");
    if (image.status === "failed" || image.status === "not_analysed") {
      $("failure-text").textContent = (image.status === "failed" ? "Could not be classified. " : "Not analysed. ") + image.failure_message;
      const retry = $("retry-form");
      if (retry) {
        retry.hidden = image.status !== "failed";
        retry.action = retry.dataset.actionTemplate.replace("/0/", "/" + image.id + "/");
      }
    }
    if (prediction) {
      const verdict = $("verdict");
      verdict.className = "badge verdict large band-" + prediction.band;
      verdict.dataset.band = prediction.band;
      verdict.textContent = prediction.text;
      const meta = $("model-meta");
      meta.textContent = "Calibrated probability of fracture " + prediction.percent + ". ";
      if (prediction.threshold_percents) {  // written with the probability's decimals (the presenter's)
        meta.textContent += "Bands: No fracture below " + prediction.threshold_percents[0] + ", Fracture from " +
          prediction.threshold_percents[1] + ", Doubt between. ";
      }
      meta.textContent += "Model " + prediction.model_version + ".";
      const boxes = $("boxes-meta");
      boxes.textContent = prediction.boxes.length
        ? prediction.boxes.length + " box" + (prediction.boxes.length > 1 ? "es" : "") + " where the model sees a fracture, numbered from the strongest (B shows or hides them)." +
          (prediction.boxes_default ? " " + prediction.boxes_caption : " Localisation not validated in the model card: off by default.")
        : "No box: the model localised nothing above its box threshold.";
    }
    const line = $("adjudication-line");
    if (image.adjudication) {
      line.hidden = false;
      line.textContent = image.adjudication.state === "decided"
        ? "Adjudicated by " + image.adjudication.adjudicator + ": " + image.adjudication.label_display + " (locked, the reference standard)."
        : "Sent to a second reader: " + image.adjudication.trigger_display + ".";
    } else {
      line.hidden = true;
    }
  }

  function waitingForCall() {
    return study.images.filter(function (image) { return image.hidden; });
  }

  function renderDecision(image) {
    const panel = $("decision-panel");
    const blinded = image.hidden;
    const locked = image.adjudication && image.adjudication.state === "decided";
    show(panel, blinded || (!!image.prediction && !locked) || study.awaiting > 0);
    show($("unaided-block"), blinded);
    show($("review-block"), !blinded);
    if (blinded) {
      const waiting = waitingForCall().length;
      $("unaided-scope").textContent = waiting > 1
        ? "Your call applies to the " + waiting + " images you have not called yet."
        : "Your call applies to this image.";
      return;
    }
    const recap = $("unaided-recap");
    recap.hidden = !image.unaided;
    if (image.unaided) recap.textContent = "Your unaided call: " + (image.unaided === "fractured" ? "Fractured" : "Not fractured") + ".";
    const awaiting = study.images.filter(function (i) { return i.awaiting && !i.hidden; });
    confirmButton.disabled = awaiting.length === 0;
    const images = awaiting.length + " image" + (awaiting.length === 1 ? "" : "s");
    confirmButton.firstChild.textContent = awaiting.length ? "Confirm study (" + images + ") " : "Study reviewed ";
    const fractured = awaiting.filter(function (i) { return i.prediction.label === "fractured"; }).length;
    $("confirm-what").textContent = images + " as the model read them: " + fractured +
      " Fractured, " + (awaiting.length - fractured) + " Not fractured";
    $("review-note").textContent = image.reviews.length ? "(image reviewed: a new review replaces it)" : "";
    const reviewable = !!image.prediction && !locked;
    show(details, reviewable);
    show(confirmImageForm, reviewable);
    if (reviewable) {
      overrideForm.action = image.review_url;
      confirmImageForm.action = image.review_url;
      resetOverride(image);
    }
  }

  function renderHistory(image) {
    const list = $("history");
    list.textContent = "";
    image.reviews.forEach(function (review, index) {
      const item = document.createElement("li");
      if (index === 0) item.className = "standing";
      const decision = document.createElement("span");
      decision.className = "decision decision-" + review.decision;
      decision.textContent = review.decision_display;
      item.appendChild(decision);
      item.appendChild(document.createTextNode(" → "));
      const label = document.createElement("strong");
      label.textContent = review.final_label_display;
      item.appendChild(label);
      const by = document.createElement("span");
      by.className = "by";
      by.textContent = " by " + review.reviewer + ", " + new Date(review.created_at).toLocaleString() +
        (review.unaided_label ? " · unaided call " + (review.unaided_label === "fractured" ? "Fractured" : "Not fractured") : "");
      item.appendChild(by);
      if (review.reason) {
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = review.reason;
        item.appendChild(reason);
      }
      if (review.notes) {
        const quote = document.createElement("q");
        quote.className = "notes";
        quote.textContent = review.notes;
        item.appendChild(quote);
      }
      list.appendChild(item);
    });
    show($("history-empty"), image.reviews.length === 0);
    $("history-empty").textContent = image.status === "not_analysed"
      ? "Nothing to review: the model did not analyse this image."
      : image.hidden ? "Shown after your call." : "Not reviewed yet.";
  }

  function renderAll() {
    renderThumbs();
    renderSummary();
    if (current) {
      renderModel(current);
      renderDecision(current);
      renderHistory(current);
    }
  }

  // --- Images ------------------------------------------------------------------------------------------

  function select(id, options) {
    const image = imageById(id);
    if (!image) return;
    disarm();
    closeOverride(false);
    current = image;
    root.dataset.selected = String(id);
    FR.viewer.setImages(study.images);
    FR.viewer.show(image);
    renderAll();
    if (!options || !options.keepUrl) {
      const url = new URL(window.location.href);
      url.searchParams.set("r", String(id));
      window.history.replaceState(null, "", url.toString());
    }
  }

  function step(offset) {
    const index = study.images.indexOf(current);
    const next = study.images[index + offset];
    if (next) select(next.id);
  }

  // --- Data from the server (actions and polling) ------------------------------------------------------

  function adopt(fresh) {
    const colleague = fresh.colleague;
    study = fresh;
    if (colleague !== undefined) study.colleague = colleague;
    current = imageById(current ? current.id : Number(root.dataset.selected)) || study.images[0];
    FR.viewer.refresh(study.images, current);
    renderAll();
  }

  function post(form, fields) {
    if (busy) return Promise.resolve(null);
    busy = true;
    const body = new FormData(form);
    Object.keys(fields || {}).forEach(function (key) { body.set(key, fields[key]); });
    return fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrf(form) },
    }).then(function (response) {
      return response.json().then(function (answer) {
        busy = false;
        if (!response.ok) {
          say(answer.error || "The server refused the request.", "error");
          return { error: answer };
        }
        if (answer.next) {
          window.location.assign(answer.next);
          return answer;
        }
        adopt(answer.study);
        say(answer.message, "ok");
        return answer;
      });
    }).catch(function () {
      busy = false;
      say("The server could not be reached; nothing was recorded. Try again.", "error");
      return null;
    });
  }

  const POLL_BUSY = 700;
  const POLL_IDLE = 30000; // keeps the "being read by" marker alive and shows colleagues' reviews
  let delay = POLL_BUSY;
  function processing() {
    return study.images.some(function (image) { return image.status === "queued" || image.status === "running"; });
  }
  // The study's data; the server also marks the study as being read by this reader.
  function fetchStatus() {
    return fetch(study.status_url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  }
  function poll() {
    fetchStatus()
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.json();
      })
      .then(function (fresh) {
        if (!busy) adopt(fresh);
        delay = processing() ? POLL_BUSY : POLL_IDLE;
      })
      .catch(function () { delay = Math.min(delay * 2, 30000); })
      .then(function () { window.setTimeout(poll, delay); });
  }

  // --- Confirm, override, unaided call ----------------------------------------------------------------

  function disarm() {
    if (!armed) return;
    armed = false;
    confirmHint.hidden = true;
    confirmButton.classList.remove("armed");
  }

  function armConfirm() {
    if (!current || current.hidden || confirmButton.disabled) return;
    closeOverride(false);
    armed = true;
    confirmHint.hidden = false;
    confirmButton.classList.add("armed");
    confirmButton.focus();
  }

  FR.overrideOpen = function () { return !!details && details.open && !details.hidden; };

  function visibleReasons() {
    return Array.prototype.filter.call(overrideForm.querySelectorAll("[data-reason]"), function (label) { return !label.hidden; });
  }

  function resetOverride(image) {
    const prediction = image.prediction;
    const opposite = prediction.label === "fractured" ? "not_fractured" : "fractured";
    overrideForm.querySelectorAll('input[name="final_label"]').forEach(function (input) {
      input.disabled = input.value === prediction.label;
      input.checked = input.value === opposite;
    });
    overrideForm.querySelectorAll("[data-model-answer]").forEach(function (node) {
      node.hidden = node.dataset.modelAnswer !== prediction.label;
    });
    fitReasons();
    notes.value = "";
    problem.hidden = true;
  }

  // Only the reasons that can explain an override to the chosen final label are offered.
  function fitReasons() {
    const chosen = overrideForm.querySelector('input[name="final_label"]:checked');
    const label = chosen ? chosen.value : "";
    let key = 0;
    overrideForm.querySelectorAll("[data-reason]").forEach(function (node) {
      const fits = node.dataset.fits.split(" ").indexOf(label) !== -1;
      node.hidden = !fits;
      const input = node.querySelector("input");
      if (!fits) input.checked = false;
      node.querySelector("[data-reason-key]").textContent = fits ? String(++key) : "";
      input.dataset.key = fits ? String(key) : "";
    });
    notesRule();
  }

  function notesRule() {
    const other = overrideForm.querySelector('input[name="reason_code"][value="other"]:checked');
    notes.required = !!other;
    overrideForm.classList.toggle("notes-required", !!other);
  }

  function openOverride() {
    if (!current || !current.prediction || details.hidden) return;
    disarm();
    details.open = true;
    const reasons = visibleReasons();
    const checked = overrideForm.querySelector('input[name="reason_code"]:checked');
    (checked || reasons[0].querySelector("input")).focus();
    details.scrollIntoView({ block: "nearest" });
  }

  function closeOverride(focusViewer) {
    if (details && details.open) {
      details.open = false;
      if (focusViewer !== false) $("viewer-0").focus({ preventScroll: true });
    }
  }

  function problemWith() {
    if (!overrideForm.querySelector('input[name="final_label"]:checked')) {
      return ["Choose the final label.", overrideForm.querySelector('input[name="final_label"]:not([disabled])')];
    }
    const reason = overrideForm.querySelector('input[name="reason_code"]:checked');
    const reasons = visibleReasons();
    if (!reason) return ["Choose a reason for the override (keys 1–" + reasons.length + ").", reasons[0].querySelector("input")];
    if (reason.value === "other" && !notes.value.trim()) return ["Describe the reason when you choose “Other”.", notes];
    return null;
  }

  confirmForm.addEventListener("submit", function (event) {
    event.preventDefault();
    disarm();
    post(confirmForm);
  });
  confirmButton.addEventListener("blur", disarm);

  confirmImageForm.addEventListener("submit", function (event) {
    event.preventDefault();
    post(confirmImageForm);
  });

  overrideForm.querySelectorAll('input[name="final_label"]').forEach(function (input) {
    input.addEventListener("change", fitReasons);
  });
  overrideForm.querySelectorAll('input[name="reason_code"]').forEach(function (input) {
    input.addEventListener("change", notesRule);
  });
  overrideForm.addEventListener("submit", function (event) {
    event.preventDefault();
    const found = problemWith();
    if (found) {
      problem.textContent = found[0];
      problem.hidden = false;
      if (found[1]) found[1].focus();
      return;
    }
    problem.hidden = true;
    post(overrideForm).then(function (answer) {
      if (answer && !answer.error) closeOverride();
    });
  });
  overrideForm.querySelector('[data-action="cancel-override"]').addEventListener("click", function () { closeOverride(); });

  function unaided(label, thisImageOnly) {
    if (!current || !current.hidden) return;
    post(unaidedForm, { label: label, radiograph: thisImageOnly ? String(current.id) : "" }).then(function (answer) {
      // The model's answer is now on screen; C/Enter confirms it, O overrides, Esc looks first.
      if (answer && !answer.error && !answer.next) armConfirm();
    });
  }
  unaidedForm.addEventListener("submit", function (event) {
    event.preventDefault();
    const label = event.submitter ? event.submitter.value : "fractured";
    unaided(label, false);
  });

  document.querySelectorAll(".thumb[data-image]").forEach(function (thumb) {
    thumb.addEventListener("click", function (event) {
      if (event.ctrlKey || event.metaKey || event.button !== 0) return;
      event.preventDefault();
      // Shift+click (or Shift+Enter on a focused thumbnail): that image goes in the second pane, in 2-up.
      if (event.shiftKey || event.altKey) FR.viewer.compareWith(Number(thumb.dataset.image));
      else select(Number(thumb.dataset.image));
    });
  });

  function follow(id) {
    const link = $(id);
    if (link && link.href) window.location.assign(link.href);
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (armed) {
        disarm();
        $("viewer-0").focus({ preventScroll: true });
        event.preventDefault();
      } else if (FR.overrideOpen()) {
        closeOverride();
        event.preventDefault();
      }
      return;
    }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && FR.overrideOpen()) {
      event.preventDefault();
      overrideForm.requestSubmit();
      return;
    }
    if (FR.isTyping(event) || FR.hasModifier(event)) return;
    if (FR.overrideOpen() && /^[1-9]$/.test(event.key)) {
      const input = overrideForm.querySelector('input[name="reason_code"][data-key="' + event.key + '"]');
      if (input) {
        input.checked = true;
        input.focus();
        notesRule();
      }
      event.preventDefault();
      return;
    }
    let handled = true;
    switch (event.key) {
      case "c": armConfirm(); break;
      case "C": if (current && !current.hidden && !confirmImageForm.hidden) post(confirmImageForm); break;
      case "o": case "O": openOverride(); break;
      case "y": unaided("fractured", false); break;
      case "Y": unaided("fractured", true); break;
      case "x": unaided("not_fractured", false); break;
      case "X": unaided("not_fractured", true); break;
      case "n": case "N": follow("next-study"); break;
      case "p": case "P": follow("previous-study"); break;
      case "]": step(1); break;
      case "[": step(-1); break;
      case "q": case "Q": follow("back-to-queue"); break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  select(Number(root.dataset.selected) || study.images[0].id, { keepUrl: true });
  window.setTimeout(poll, processing() ? 300 : POLL_IDLE);

  // Leaving the page (another study, the queue, a closed tab) frees the "being read by" marker at once; a
  // beacon, because an ordinary request may be cancelled as the page unloads. A page kept in the back/forward
  // cache marks the study again when it is shown.
  window.addEventListener("pagehide", function () {
    const token = document.querySelector('input[name="csrfmiddlewaretoken"]');
    if (!token || !navigator.sendBeacon) return; // the marker then lapses on its own
    const body = new FormData();
    body.set("csrfmiddlewaretoken", token.value);
    navigator.sendBeacon(study.leave_url, body);
  });
  window.addEventListener("pageshow", function (event) {
    // Back from the cache: the status answer marks the study as being read again (the poll loop goes on).
    if (event.persisted) fetchStatus();
  });
})();
