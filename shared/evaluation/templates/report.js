// The per-record view. Record text is model output: it reaches the page through textContent only.
(function () {
  "use strict";
  var PAGE_SIZE = 50;
  var data = JSON.parse(document.getElementById("records-data").textContent);
  var body = document.getElementById("records-body");
  var onlyDisagreements = document.getElementById("only-disagreements");
  // Present when the primary metric is continuous: a disagreement must be at least this large.
  var minDifference = document.getElementById("min-difference");
  var categoryFilter = document.getElementById("category-filter");
  var search = document.getElementById("record-search");
  var count = document.getElementById("record-count");
  var prev = document.getElementById("page-prev");
  var next = document.getElementById("page-next");
  var pageInfo = document.getElementById("page-info");
  var hasCategories = Boolean(categoryFilter);
  var columns = 3 + (hasCategories ? 1 : 0) + data.models.length;
  var page = 0;
  var matching = data.records;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(score) {
    return score === null || score === undefined ? "–" : score.toFixed(3);
  }

  function haystack(r) {
    if (r._text === undefined) {
      var parts = [r.input || "", r.target || ""];
      r.a.forEach(function (a) { if (a) parts.push(a.out || "", a.err || ""); });
      r._text = parts.join("\n").toLowerCase();
    }
    return r._text;
  }

  function matches(r, query, category, least) {
    if (onlyDisagreements.checked && !(r.d && (r.sp === null || r.sp >= least - 1e-9))) return false;
    if (category && r.cat !== category) return false;
    if (query && haystack(r).indexOf(query) < 0) return false;
    return true;
  }

  function primaryCell(answer) {
    if (!answer) return el("td", "num", "–");
    if (answer.err !== null || answer.out === null) return el("td", "num error", "error");
    return el("td", "num", fmt(data.primary_index >= 0 ? answer.s[data.primary_index] : null));
  }

  function recordRow(r) {
    var tr = el("tr", "record" + (r.d ? " disagree" : ""));
    tr.dataset.index = r.i;
    tr.setAttribute("aria-expanded", "false");
    var first = el("td", "num");
    var toggle = el("button", "toggle", "#" + r.i);
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-label", "Show record " + r.i + " side by side");
    first.appendChild(toggle);
    tr.appendChild(first);
    if (hasCategories) tr.appendChild(el("td", "", r.cat));
    var input = el("td", "text", r.input);
    input.title = (r.input || "").slice(0, 500);
    tr.appendChild(input);
    tr.appendChild(el("td", "text", r.target));
    r.a.forEach(function (a) { tr.appendChild(primaryCell(a)); });
    tr.addEventListener("click", function () { toggleDetail(tr, r); });
    return tr;
  }

  function answerCard(name, a) {
    var failed = !a || a.err !== null || a.out === null;
    var card = el("div", "answer" + (failed ? " failed" : ""));
    card.dataset.model = name;
    card.appendChild(el("h4", "", name + (a && a.cached ? " (from cache)" : "")));
    if (!a) {
      card.appendChild(el("p", "small", "No answer recorded."));
      return card;
    }
    card.appendChild(el("pre", "text output", failed ? "Error: " + (a.err || "no output") : a.out));
    var table = el("table", "scores");
    var head = el("tr");
    head.appendChild(el("th", "", "Metric"));
    head.appendChild(el("th", "", "Score"));
    table.appendChild(el("thead")).appendChild(head);
    var tbody = table.appendChild(el("tbody"));
    data.metrics.forEach(function (metric, k) {
      var row = el("tr");
      var th = el("th", "", metric);
      th.scope = "row";
      row.appendChild(th);
      row.appendChild(el("td", "num", fmt(a.s[k])));
      tbody.appendChild(row);
    });
    card.appendChild(table);
    if (a.tin !== null || a.tout !== null) {
      card.appendChild(el("p", "small", "Tokens: " + (a.tin === null ? "?" : a.tin) + " in, " + (a.tout === null ? "?" : a.tout) + " out"));
    }
    return card;
  }

  function detailRow(r) {
    var tr = el("tr", "detail");
    tr.dataset.index = r.i;
    var td = el("td");
    td.colSpan = columns;
    var where = "Record " + r.i + (r.line !== null ? " (line " + r.line + ")" : "") + (r.cat !== null ? " · " + r.cat : "");
    td.appendChild(el("p", "small", where));
    td.appendChild(el("h4", "", "Input"));
    td.appendChild(el("pre", "text input", r.input));
    td.appendChild(el("h4", "", r.refs.length > 1 ? "References (the best-scoring one counts)" : "Reference"));
    if (r.refs.length > 1) {
      var list = el("ul", "refs");
      r.refs.forEach(function (ref) { list.appendChild(el("li", "", ref)); });
      td.appendChild(list);
    } else {
      td.appendChild(el("pre", "text target", r.target === null ? "(none)" : r.target));
    }
    var grid = el("div", "detail-grid");
    data.models.forEach(function (name, k) { grid.appendChild(answerCard(name, r.a[k])); });
    td.appendChild(grid);
    tr.appendChild(td);
    return tr;
  }

  function toggleDetail(tr, r) {
    var open = tr.getAttribute("aria-expanded") === "true";
    if (open) {
      var detail = tr.nextElementSibling;
      if (detail && detail.classList.contains("detail")) detail.remove();
    } else {
      tr.after(detailRow(r));
    }
    tr.setAttribute("aria-expanded", open ? "false" : "true");
    tr.querySelector("button.toggle").setAttribute("aria-expanded", open ? "false" : "true");
  }

  function renderPage() {
    var pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var start = page * PAGE_SIZE;
    var rows = matching.slice(start, start + PAGE_SIZE);
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(recordRow(r)); });
    body.replaceChildren(fragment);
    if (!rows.length) {
      var empty = el("tr", "empty");
      var td = el("td", "", "No record matches.");
      td.colSpan = columns;
      empty.appendChild(td);
      body.appendChild(empty);
    }
    pageInfo.textContent = matching.length
      ? "Records " + (start + 1) + "–" + (start + rows.length) + " of " + matching.length + " (page " + (page + 1) + " of " + pages + ")"
      : "";
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  function applyFilters() {
    var query = search.value.trim().toLowerCase();
    var category = hasCategories ? categoryFilter.value : "";
    var least = minDifference ? Math.max(0, parseFloat(minDifference.value) || 0) : 0;
    matching = data.records.filter(function (r) { return matches(r, query, category, least); });
    count.dataset.count = matching.length;
    count.textContent = matching.length + " of " + data.records.length + " records match";
    page = 0;
    renderPage();
  }

  onlyDisagreements.addEventListener("change", applyFilters);
  if (hasCategories) categoryFilter.addEventListener("change", applyFilters);
  if (minDifference) minDifference.addEventListener("input", applyFilters);
  search.addEventListener("input", applyFilters);
  prev.addEventListener("click", function () { page -= 1; renderPage(); });
  next.addEventListener("click", function () { page += 1; renderPage(); });
  applyFilters();
})();
