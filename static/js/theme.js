// The reading-room theme: dark when the reader chose it (the toggle in the top bar, remembered in this
// browser) or, without a choice, when the system prefers dark. Loaded in <head>, before the page is drawn,
// so a dark page never flashes light.
(function () {
  "use strict";
  const KEY = "fracture-review-theme";
  const root = document.documentElement;
  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (err) { return null; }
  }
  function apply() {
    const choice = stored();
    const dark = choice ? choice === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "dark" : "light";
    const button = document.querySelector("[data-theme-toggle]");
    if (button) {
      button.setAttribute("aria-pressed", dark ? "true" : "false");
      button.title = dark ? "Light theme" : "Dark reading-room theme";
    }
  }
  apply();
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", function () {
    apply();
    const button = document.querySelector("[data-theme-toggle]");
    if (!button) return;
    button.addEventListener("click", function () {
      const next = root.dataset.theme === "dark" ? "light" : "dark";
      try { window.localStorage.setItem(KEY, next); } catch (err) { /* private mode: this page only */ }
      root.dataset.theme = next;
      apply();
    });
  });
})();
