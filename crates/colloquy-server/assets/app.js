/* Colloquy web UI: the little that needs the browser. Everything works without it; this
 * shows times in the viewer's time zone and tells the server that zone for date filters. */
(function () {
  "use strict";

  var styles = {
    datetime: { dateStyle: "medium", timeStyle: "medium" },
    date: { dateStyle: "medium" },
    time: { timeStyle: "medium" }
  };

  /* <time datetime="2026-01-02T03:04:05.678Z" data-local="datetime">2026-01-02 03:04:05 UTC</time>
   * gets its text replaced by the local rendering; the UTC text stays as its tooltip. */
  function localizeTimes(root) {
    var els = root.querySelectorAll("time[data-local]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      if (el.getAttribute("data-localized")) continue;
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) continue;
      var style = styles[el.getAttribute("data-local")] || styles.datetime;
      var text;
      try {
        text = when.toLocaleString(undefined, style);
      } catch (e) {
        text = when.toLocaleString();
      }
      if (!el.title) el.title = el.textContent.trim();
      el.textContent = text;
      el.setAttribute("data-localized", "1");
    }
  }

  /* Date filters are whole days in the viewer's zone: send its UTC offset (minutes east). */
  function fillTimezone(root) {
    var inputs = root.querySelectorAll("input[name=tz]");
    for (var i = 0; i < inputs.length; i++) {
      inputs[i].value = String(-new Date().getTimezoneOffset());
    }
  }

  /* Copy buttons next to ids (<button class="copy-id" data-copy="ID" hidden>): shown only
   * here, since they need the browser. navigator.clipboard where the page may use it, else
   * a selected, off-screen textarea and execCommand("copy"). */
  function showCopyButtons(root) {
    var buttons = root.querySelectorAll("button.copy-id[hidden]");
    for (var i = 0; i < buttons.length; i++) buttons[i].hidden = false;
  }

  function copyWithSelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.top = "-1000px";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok;
  }

  function copied(button, ok) {
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    button.textContent = ok ? "Copied" : "Copy failed";
    if (ok) button.setAttribute("data-copied", "1");
    clearTimeout(button._colloquyTimer);
    button._colloquyTimer = setTimeout(function () {
      button.textContent = label;
      button.removeAttribute("data-copied");
    }, 2000);
  }

  function copyId(event) {
    var button = event.target.closest && event.target.closest("button.copy-id");
    if (!button) return;
    event.preventDefault();
    var text = button.getAttribute("data-copy") || "";
    if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { copied(button, true); },
        function () { copied(button, copyWithSelection(text)); }
      );
    } else {
      copied(button, copyWithSelection(text));
    }
  }

  function init(root) {
    root = root || document;
    localizeTimes(root);
    fillTimezone(root);
    showCopyButtons(root);
  }

  document.addEventListener("click", copyId);

  /* After htmx replaced the element that had focus (a pager link), move focus to the
   * updated region instead of leaving it on <body>. */
  function keepFocus(event) {
    var target = event.detail && event.detail.target;
    var active = document.activeElement;
    if (!target || !target.isConnected) return;
    if (active && active !== document.body && active.isConnected) return;
    if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
    target.focus({ preventScroll: true });
  }

  if (window.htmx) {
    document.addEventListener("htmx:afterSwap", keepFocus);
    window.htmx.onLoad(init);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
})();
