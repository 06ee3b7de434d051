// Review by keyboard: C arms Confirm (Enter records it), O opens Override (1-7 pick the reason, Tab to
// the notes, Ctrl+Enter records it), Esc backs out; N/P move through the queue, [ and ] through the
// study's images, Q returns to the queue. The server checks every rule again; these checks only save a trip.
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const confirmForm = document.getElementById("confirm-form");
  const confirmButton = document.getElementById("confirm-button");
  const confirmHint = document.getElementById("confirm-hint");
  const details = document.getElementById("override");
  const overrideForm = document.getElementById("override-form");
  const problem = document.getElementById("override-problem");
  const notes = document.getElementById("id_reason_text");
  const viewer = document.getElementById("viewer");
  let armed = false;

  FR.overrideOpen = function () {
    return !!details && details.open;
  };

  function follow(selector) {
    const link = document.querySelector(selector);
    if (link && link.href) window.location.assign(link.href);
  }

  function disarm() {
    if (!armed) return;
    armed = false;
    confirmHint.hidden = true;
    confirmButton.classList.remove("armed");
  }

  function armConfirm() {
    if (!confirmButton) return;
    closeOverride();
    armed = true;
    confirmHint.hidden = false;
    confirmButton.classList.add("armed");
    confirmButton.focus();
  }

  function reasonInputs() {
    return overrideForm.querySelectorAll('input[name="reason_code"]');
  }

  function focusReason() {
    const checked = overrideForm.querySelector('input[name="reason_code"]:checked');
    (checked || reasonInputs()[0]).focus();
  }

  function openOverride() {
    if (!details) return;
    disarm();
    details.open = true;
    focusReason();
    details.scrollIntoView({ block: "nearest" });
  }

  function closeOverride() {
    if (details && details.open) {
      details.open = false;
      if (viewer) viewer.focus({ preventScroll: true });
    }
  }

  function chooseReason(key) {
    const input = overrideForm.querySelector('input[name="reason_code"][data-key="' + key + '"]');
    if (!input) return;
    input.checked = true;
    input.focus();
    notesRule();
  }

  function notesRule() {
    const other = overrideForm.querySelector('input[name="reason_code"][value="other"]:checked');
    notes.required = !!other;
    overrideForm.classList.toggle("notes-required", !!other);
  }

  function problemWith() {
    if (!overrideForm.querySelector('input[name="final_label"]:checked')) {
      return ["Choose the final label.", overrideForm.querySelector('input[name="final_label"]:not([disabled])')];
    }
    const reason = overrideForm.querySelector('input[name="reason_code"]:checked');
    if (!reason) return ["Choose a reason for the override (keys 1–" + reasonInputs().length + ").", reasonInputs()[0]];
    if (reason.value === "other" && !notes.value.trim()) return ["Describe the reason when you choose “Other”.", notes];
    return null;
  }

  if (confirmForm) {
    confirmButton.addEventListener("blur", disarm);
    confirmForm.addEventListener("submit", function () {
      confirmButton.disabled = true; // one click, one review
    });
  }

  if (overrideForm) {
    reasonInputs().forEach(function (input) { input.addEventListener("change", notesRule); });
    notesRule();
    details.addEventListener("toggle", function () {
      if (details.open && !overrideForm.contains(document.activeElement)) focusReason();
    });
    overrideForm.addEventListener("submit", function (event) {
      const found = problemWith();
      if (found) {
        event.preventDefault();
        problem.textContent = found[0];
        problem.hidden = false;
        if (found[1]) found[1].focus();
        return;
      }
      problem.hidden = true;
      document.getElementById("override-button").disabled = true;
    });
    overrideForm.querySelector('[data-action="cancel-override"]').addEventListener("click", closeOverride);
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (armed) {
        disarm();
        if (viewer) viewer.focus({ preventScroll: true });
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
      event.preventDefault();
      chooseReason(event.key);
      return;
    }
    let handled = true;
    switch (event.key) {
      case "c": case "C": armConfirm(); break;
      case "o": case "O": openOverride(); break;
      case "n": case "N": follow("#next-study"); break;
      case "p": case "P": follow("#previous-study"); break;
      case "]": follow("[data-next-image]"); break;
      case "[": follow("[data-previous-image]"); break;
      case "q": case "Q": follow('.study-nav a[href$="/queue/"]'); break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });
})();
