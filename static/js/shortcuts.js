// Shared keyboard plumbing: the "?" help overlay and a test for "the user is typing, leave keys alone".
(function () {
  "use strict";
  const FR = (window.FR = window.FR || {});
  const TEXT_INPUTS = ["text", "search", "email", "password", "number", "date", "url", "tel"];

  FR.isTyping = function (event) {
    const target = event.target;
    if (!target || !target.tagName) return false;
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && TEXT_INPUTS.indexOf(target.type) !== -1;
  };
  FR.inFormControl = function (event) {
    const target = event.target;
    return !!target && ["INPUT", "TEXTAREA", "SELECT"].indexOf(target.tagName) !== -1;
  };
  FR.hasModifier = function (event) {
    return event.ctrlKey || event.metaKey || event.altKey;
  };

  const help = document.getElementById("help");
  let returnFocus = null;
  FR.helpOpen = function () {
    return !!help && !help.hidden;
  };

  function openHelp() {
    if (!help) return;
    returnFocus = document.activeElement;
    help.hidden = false;
    help.querySelector("[data-help-close]").focus();
  }

  function closeHelp() {
    if (!help) return;
    help.hidden = true;
    if (returnFocus && typeof returnFocus.focus === "function") returnFocus.focus();
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-help-open]")) openHelp();
    else if (event.target.closest("[data-help-close]") || event.target === help) closeHelp();
  });

  // Capture phase: while the help is open no other shortcut may act on a key.
  document.addEventListener(
    "keydown",
    function (event) {
      if (!help) return;
      if (FR.helpOpen()) {
        if (event.key === "Escape" || event.key === "?") {
          event.preventDefault();
          closeHelp();
        } else if (event.key === "Tab") {
          event.preventDefault(); // the close button is the dialog's only control
        }
        if (event.key !== "Enter" && event.key !== " ") event.stopImmediatePropagation();
        return;
      }
      if (event.key === "?" && !FR.isTyping(event) && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        event.stopImmediatePropagation();
        openHelp();
      }
    },
    true
  );
})();
