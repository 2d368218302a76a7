/* gradcheck report: sort, filter and open rows. Vanilla JS, no network, no HTML
   built from strings: rows are moved and hidden, never rewritten.
   A view can be linked: #filter=failed&kind=gradient&q=text (also as ?query). */
(function () {
  "use strict";
  document.documentElement.classList.remove("nojs");
  var table = document.getElementById("checks");
  if (!table) { return; }
  var bodies = Array.prototype.slice.call(table.tBodies);
  var filterButtons = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));
  var kindSelect = document.getElementById("kind-filter");
  var search = document.getElementById("search");
  var shown = document.getElementById("shown");
  var empty = document.getElementById("empty");
  var state = { filter: "all", kind: "", q: "" };
  var STATUS_ORDER = { failed: 0, unasserted: 1, no_verdict: 2, expected_failure: 3, passed: 4 };
  /* Ties keep the page's first order (failures first, then as recorded). */
  var firstOrder = new Map();
  bodies.forEach(function (body, i) { firstOrder.set(body, i); });

  function readLocation() {
    var text = window.location.hash.replace(/^#/, "") || window.location.search.replace(/^\?/, "");
    var params = new URLSearchParams(text);
    var filter = params.get("filter") || "all";
    var known = filterButtons.some(function (b) { return b.getAttribute("data-filter") === filter; });
    state.filter = known ? filter : "all";
    state.kind = params.get("kind") || "";
    state.q = params.get("q") || "";
    kindSelect.value = state.kind;
    if (kindSelect.value !== state.kind) { state.kind = ""; kindSelect.value = ""; }
    search.value = state.q;
  }

  function writeLocation() {
    var params = new URLSearchParams();
    if (state.filter !== "all") { params.set("filter", state.filter); }
    if (state.kind) { params.set("kind", state.kind); }
    if (state.q) { params.set("q", state.q); }
    var hash = params.toString();
    try {
      window.history.replaceState(null, "", hash ? "#" + hash : window.location.pathname + window.location.search);
    } catch (e) { /* some viewers forbid it; the view still works */ }
  }

  function apply() {
    var q = state.q.toLowerCase();
    var count = 0;
    bodies.forEach(function (body) {
      var ok = (state.filter === "all" || body.getAttribute("data-status") === state.filter) &&
        (!state.kind || body.getAttribute("data-kind") === state.kind) &&
        (!q || body.rows[0].textContent.toLowerCase().indexOf(q) !== -1);
      body.hidden = !ok;
      if (ok) { count += 1; }
    });
    filterButtons.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-filter") === state.filter));
    });
    shown.textContent = count + " shown";
    empty.hidden = count !== 0;
    document.body.setAttribute("data-filter", state.filter);
  }

  function setOpen(body, open) {
    if (body.rows.length < 2) { return; }  /* a failure past the page's detail limit */
    body.rows[1].hidden = !open;
    body.rows[0].cells[2].querySelector("button").setAttribute("aria-expanded", String(open));
  }

  /* Sort keys are read from the cells, not stored twice: "9.5e-10", "2 findings", "25× speedup". */
  var UNITS = { s: 1, ms: 1e-3, "µs": 1e-6, ns: 1e-9 };
  function leadingNumber(text) {
    text = text.trim();
    if (/^-?inf/.test(text)) { return text.charAt(0) === "-" ? -Infinity : Infinity; }
    var value = parseFloat(text);
    return isNaN(value) ? null : value;
  }
  function seconds(text) {
    var value = leadingNumber(text);
    var unit = text.trim().split(/\s+/)[1];
    return value === null ? null : value * (UNITS[unit] || 1);
  }

  function sortKey(key) {
    if (key === "status") { return function (b) { return STATUS_ORDER[b.getAttribute("data-status")]; }; }
    if (key === "measure") { return function (b) { return leadingNumber(b.rows[0].cells[4].textContent); }; }
    if (key === "duration") { return function (b) { return seconds(b.rows[0].cells[5].textContent); }; }
    var column = { kind: 1, name: 2, test: 3 }[key];
    return function (b) { return b.rows[0].cells[column].textContent.toLowerCase(); };
  }

  function sortBy(th) {
    var key = th.getAttribute("data-sort");
    var descending = th.getAttribute("aria-sort") === "ascending";
    var get = sortKey(key);
    var sign = descending ? -1 : 1;
    bodies.sort(function (a, b) {
      var x = get(a), y = get(b);
      if (x !== y) {
        if (x === null) { return 1; }   /* no value: last either way */
        if (y === null) { return -1; }
        return (x < y ? -1 : 1) * sign;
      }
      return firstOrder.get(a) - firstOrder.get(b);
    });
    table.querySelectorAll("th[data-sort]").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var fragment = document.createDocumentFragment();
    bodies.forEach(function (b) { fragment.appendChild(b); });
    table.appendChild(fragment);
  }

  filterButtons.forEach(function (b) {
    b.addEventListener("click", function () { state.filter = b.getAttribute("data-filter"); apply(); writeLocation(); });
  });
  kindSelect.addEventListener("change", function () { state.kind = kindSelect.value; apply(); writeLocation(); });
  var timer = null;
  search.addEventListener("input", function () {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () { state.q = search.value; apply(); writeLocation(); }, 120);
  });
  document.querySelectorAll("[data-kind-link]").forEach(function (a) {
    a.addEventListener("click", function (event) {
      event.preventDefault();
      state.kind = a.getAttribute("data-kind-link"); state.filter = "all";
      kindSelect.value = state.kind; apply(); writeLocation();
      table.scrollIntoView();
    });
  });
  table.addEventListener("click", function (event) {
    var toggle = event.target.closest("#checks > tbody > tr:first-child > td > button");
    if (toggle) {
      var body = toggle.closest("tbody");
      setOpen(body, body.rows[1].hidden);
    }
  });
  table.querySelectorAll("th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  document.getElementById("expand-all").addEventListener("click", function () {
    bodies.forEach(function (b) { if (!b.hidden) { setOpen(b, true); } });
  });
  document.getElementById("collapse-all").addEventListener("click", function () {
    bodies.forEach(function (b) { setOpen(b, false); });
  });
  window.addEventListener("hashchange", function () { readLocation(); apply(); });

  readLocation();
  apply();
}());
