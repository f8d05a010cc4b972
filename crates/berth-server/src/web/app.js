"use strict";
(function () {
  function errFor(f) { return document.getElementById(f.getAttribute("data-err") || ""); }
  function show(f, msg) {
    var e = errFor(f);
    if (e) e.textContent = msg;
    if (msg) f.setAttribute("aria-invalid", "true"); else f.removeAttribute("aria-invalid");
  }
  function check(f) {
    var msg = "", v = f.value.trim();
    if (f.hasAttribute("data-json")) {
      try {
        var p = JSON.parse(v || "{}");
        if (p === null || typeof p !== "object" || Array.isArray(p)) msg = "parameters must be a JSON object, like {\"zoom\": 2}";
      } catch (x) { msg = "parameters are not JSON: " + x.message; }
    } else if (f.hasAttribute("data-urls")) {
      v.split("\n").forEach(function (l) {
        l = l.trim();
        if (l && !msg && !/^https?:\/\/[^\s\/]+(\/\S*)?$/.test(l)) msg = "not an http(s) URL: " + l;
      });
    }
    if (f.hasAttribute("data-json") || f.hasAttribute("data-urls")) f.setCustomValidity(msg);
    show(f, msg || (f.validity.valid ? "" : f.validationMessage));
  }
  document.querySelectorAll("[data-err]").forEach(function (f) {
    f.addEventListener("input", function () { check(f); });
    f.addEventListener("invalid", function () { check(f); });
    if (f.hasAttribute("data-json") || f.hasAttribute("data-urls")) f.setCustomValidity("");
  });
  // Kill asks first (the server asks too, without JS).
  document.addEventListener("submit", function (ev) {
    var f = ev.target, q = f.getAttribute("data-confirm");
    if (!q) return;
    if (!window.confirm(q)) { ev.preventDefault(); return; }
    var c = document.createElement("input");
    c.type = "hidden"; c.name = "confirm"; c.value = "yes";
    f.appendChild(c);
  });
  // The running list: its rows again every few seconds while visible.
  var live = document.querySelector("[data-live]");
  if (live && window.fetch) {
    var tag = "", every = +live.getAttribute("data-every") || 3000, note = document.getElementById("live-status");
    var say = function (t) { if (note) note.textContent = t; };
    var tick = function () {
      if (document.hidden) return setTimeout(tick, every);
      fetch(live.getAttribute("data-live"), { headers: tag ? { "If-None-Match": tag } : {}, credentials: "same-origin", redirect: "error" })
        .then(function (r) {
          if (r.status === 304) return null;
          if (!r.ok) throw new Error("status " + r.status);
          tag = r.headers.get("ETag") || "";
          return r.text();
        })
        .then(function (html) {
          if (html !== null) {
            var a = document.activeElement, row = a && live.contains(a) ? a.closest("tr") : null;
            var key = row && row.getAttribute("data-name"), i = row ? Array.prototype.indexOf.call(row.querySelectorAll("a,button"), a) : -1;
            live.innerHTML = html;
            if (key) {
              var r2 = live.querySelector('tr[data-name="' + key + '"]');
              var t = r2 && r2.querySelectorAll("a,button")[i];
              if (t) t.focus();
            }
            var n = live.querySelectorAll("tr[data-name]").length, count = document.getElementById("running-count");
            if (count) count.textContent = n === 0 ? "Nothing is running." : n === 1 ? "1 container." : n + " containers.";
            say("Updated " + new Date().toLocaleTimeString());
          }
          setTimeout(tick, every);
        })
        .catch(function () { say("Cannot update the list just now; retrying."); setTimeout(tick, every * 3); });
    };
    live.setAttribute("data-js", "on");
    setTimeout(tick, every);
  }
  // Logs: follow the container's output in the page.
  var log = document.querySelector("[data-follow]");
  if (log && window.fetch && window.TextDecoder) {
    var st = document.getElementById("follow-status");
    var set = function (t) { if (st) st.textContent = t; };
    fetch(log.getAttribute("data-follow"), { credentials: "same-origin" }).then(function (r) {
      if (!r.ok || !r.body) throw new Error("status " + r.status);
      var rd = r.body.getReader(), dec = new TextDecoder(), first = true;
      set("following new lines");
      log.setAttribute("data-following", "yes");
      var pump = function () {
        return rd.read().then(function (c) {
          if (c.done) { set("the container stopped: no more lines"); log.setAttribute("data-following", "ended"); return; }
          var end = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          if (first) { log.textContent = ""; first = false; }
          log.appendChild(document.createTextNode(dec.decode(c.value, { stream: true })));
          if (end) log.scrollTop = log.scrollHeight;
          return pump();
        });
      };
      return pump();
    }).catch(function () { set("not following (reload for new lines)"); });
  }
})();
