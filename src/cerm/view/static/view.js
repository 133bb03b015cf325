// cerm view: routes (#summary, #items?filters, #item/N, #compare), the filtered item list and item pages.
// Item data comes in chunk files (data/<run>/items-NNNNN.js) loaded on demand by <script> tags, which
// also works from file:// pages. Text always goes in through textContent (never innerHTML).
"use strict";
const CERM = (() => {
  const state = { meta: null, index: [], comparison: null, chunks: { a: {}, b: {} }, waiting: {} };
  const PAGE = 50;
  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const fmt = (x, d = 2) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(d)) : "–");
  const scoresText = (scores) => scores.map((s) => (s === null ? "✗" : fmt(s, 1))).join(" · ");
  // a gap column reads down: every value with the same decimals (-3.50 above -2.00, never -2)
  const gapText = (x) => (typeof x === "number" ? x.toFixed(2) : "–");

  // ---- data --------------------------------------------------------------------------------
  function chunk(run, k, items) {
    state.chunks[run][k] = items;
    for (const cb of state.waiting[run + k] || []) cb(items);
    delete state.waiting[run + k];
  }
  function loadChunk(run, k, cb) {
    if (state.chunks[run][k]) return cb(state.chunks[run][k]);
    const key = run + k;
    if (state.waiting[key]) return state.waiting[key].push(cb);
    state.waiting[key] = [cb];
    const s = document.createElement("script");
    s.src = `data/${run}/items-${String(k).padStart(5, "0")}.js`;
    s.onerror = () => { delete state.waiting[key]; showError(`could not load ${s.src}`); };
    document.body.append(s);
  }
  function getItem(run, n, cb) {
    const size = state.meta.chunk_size;
    loadChunk(run, Math.floor(n / size), (items) => cb(items[n % size]));
  }
  function showError(msg) {
    const v = $("#view-item");
    v.replaceChildren(el("p", { class: "warning" }, msg));
  }

  // ---- routing -----------------------------------------------------------------------------
  function parseHash() {
    const h = decodeURIComponent(location.hash.slice(1) || "summary");
    const [path, query] = h.split("?");
    return { parts: path.split("/"), params: new URLSearchParams(query || "") };
  }
  function show(name) {
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${name}`);
  }
  function route() {
    const { parts, params } = parseHash();
    if (parts[0] === "item") {
      const run = parts.length > 2 ? parts[1] : "a";
      show("item");
      renderItem(run, Number(parts[parts.length - 1]));
    } else if (parts[0] === "items") {
      show("items");
      renderList(params);
    } else if (parts[0] === "compare" && state.comparison) {
      show("compare");
      renderCompare();
    } else {
      show("summary");
    }
    window.scrollTo(0, 0);
  }

  // ---- the item list -----------------------------------------------------------------------
  const FILTERS = ["subset", "verdict", "status", "flag", "gapmin", "gapmax", "q"];
  let lastListHash = "#items";
  function filtered(params) {
    const f = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
    const q = f.q.toLowerCase();
    const lo = f.gapmin === "" ? null : Number(f.gapmin);
    const hi = f.gapmax === "" ? null : Number(f.gapmax);
    return state.index.filter((r) =>
      (!f.subset || r.subset === f.subset || r.subset.startsWith(f.subset + "/")) &&
      (!f.verdict || r.verdict === f.verdict) &&
      (!f.status || r.statuses.includes(f.status)) &&
      (!f.flag || r.flags.includes(f.flag)) &&
      (lo === null || (r.gap !== null && r.gap >= lo)) &&
      (hi === null || (r.gap !== null && r.gap <= hi)) &&
      (!q || r.id.toLowerCase().includes(q) || r.subset.toLowerCase().includes(q) || r.q.toLowerCase().includes(q)));
  }
  function fillSelect(name, values) {
    const sel = document.querySelector(`#filters [name=${name}]`);
    if (sel.options.length > 1) return;
    for (const v of values) sel.append(el("option", { value: v }, v));
  }
  function setForm(params) {
    for (const k of FILTERS) document.querySelector(`#filters [name=${k}]`).value = params.get(k) || "";
  }
  function formHash(page) {
    const p = new URLSearchParams();
    for (const k of FILTERS) {
      const v = document.querySelector(`#filters [name=${k}]`).value;
      if (v) p.set(k, v);
    }
    if (page) p.set("page", page);
    const s = p.toString();
    return "#items" + (s ? "?" + s : "");
  }
  function renderList(params) {
    lastListHash = location.hash || "#items";
    setForm(params);
    const rows = filtered(params);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    const page = Math.min(Math.max(0, Number(params.get("page") || 0)), pages - 1);
    const body = $("#item-list tbody");
    body.replaceChildren(...rows.slice(page * PAGE, (page + 1) * PAGE).map((r) =>
      el("tr", { class: "row", "data-n": r.n, onclick: () => { location.hash = `#item/${r.n}`; } },
        el("td", {}, r.n), el("td", {}, el("a", { href: `#item/${r.n}` }, r.id)), el("td", {}, r.subset),
        el("td", {}, el("span", { class: `verdict v-${r.verdict}` }, r.verdict)),
        el("td", { class: "num" }, scoresText(r.scores)), el("td", { class: "num" }, gapText(r.gap)),
        el("td", {}, r.statuses.map((s) => el("span", { class: `status s-${s}` }, s)),
          r.flags.map((f) => el("span", { class: "flag" }, f))),
        el("td", { class: "q" }, r.q))));
    $("#list-count").textContent = `${rows.length} of ${state.index.length} items`;
    $("#page-info").textContent = `page ${page + 1} of ${pages}`;
    $("#prev-page").disabled = page === 0;
    $("#next-page").disabled = page >= pages - 1;
    $("#prev-page").onclick = () => { location.hash = formHash(page - 1); };
    $("#next-page").onclick = () => { location.hash = formHash(page + 1); };
  }
  function setupFilters() {
    fillSelect("subset", state.meta.subsets);
    fillSelect("verdict", state.meta.verdicts);
    fillSelect("status", state.meta.statuses);
    fillSelect("flag", state.meta.flags);
    const form = $("#filters");
    form.addEventListener("change", () => { location.hash = formHash(0); });
    form.addEventListener("input", (e) => {
      if (e.target.name === "q") history.replaceState(null, "", formHash(0)), renderList(parseHash().params);
    });
    form.addEventListener("submit", (e) => e.preventDefault());
    form.addEventListener("reset", (e) => { e.preventDefault(); location.hash = "#items"; });
  }

  // ---- an item -----------------------------------------------------------------------------
  function queryView(query) {
    if (Array.isArray(query)) {
      return el("div", { class: "chat" }, query.map((m) =>
        el("div", { class: `turn role-${m.role}` }, el("span", { class: "role" }, m.role), el("pre", {}, m.content))));
    }
    return el("pre", { class: "query-text" }, query === null || query === undefined ? "(query not recorded)" : query);
  }
  function criteriaView(crits) {
    if (!crits.length) return el("p", { class: "note" }, "(criteria not recorded)");
    return crits.map((c, k) => el("div", { class: "criteria" },
      crits.length > 1 ? el("h4", {}, `criteria set ${k + 1}`) : null,
      c.parse_warning ? el("p", { class: "warning" }, `parse warning: ${c.parse_warning}`) : null,
      c.items.length ? el("ol", { class: "crit-items" }, c.items.map((x) =>
        el("li", {}, el("b", {}, x.term), x.description ? ": " + x.description : ""))) : null,
      el("details", { class: "raw" }, el("summary", {}, "raw criteria text"), el("pre", {}, c.text || "(not recorded)")),
      el("p", { class: "cost" }, `source ${c.source || "–"} · ${fmt(c.tokens_in, 0)} tokens in, ${fmt(c.tokens_out, 0)} out · ` +
        `${fmt(c.seconds)} s` + (c.key ? ` · key ${c.key.slice(0, 12)}` : ""))));
  }
  function markedText(text, spans, terms, cardId) {
    const pre = el("pre", { class: "evaluation" });
    let at = 0;
    for (const s of spans) {
      if (s.start > at) pre.append(text.slice(at, s.start));
      const label = s.kind === "criterion" ? `criterion ${s.n + 1}${terms[s.n] ? " · " + terms[s.n] : ""}`
        : s.kind === "other" ? "Other Point(s)" : "overall score";
      pre.append(el("mark", { class: `box box-${s.kind}`, title: label,
        id: s.kind === "criterion" ? `${cardId}-c${s.n}` : `${cardId}-${s.kind}` }, text.slice(s.start, s.end)));
      at = s.end;
    }
    if (at < text.length) pre.append(text.slice(at));
    return pre;
  }
  function distView(dist) {
    if (!dist.length) return null;
    const top = Math.max(...dist.map((d) => d[1]));
    return el("div", { class: "dist", title: "score distribution at the final box" },
      dist.map(([s, p]) => el("div", { class: "bar", title: `${fmt(s, 1)}: ${(100 * p).toFixed(1)}%` },
        el("span", { class: "fill", style: `height:${Math.round(40 * p / (top || 1))}px` }), el("span", { class: "lab" }, fmt(s, 1)))));
  }
  function candidateCard(c, item, run) {
    // the criteria this judgment used (one per response in the "w/o unified criteria" ablation)
    const crit = item.criteria.find((k) => k.key && k.key === c.criteria_key) || item.criteria[0] || { items: [] };
    const terms = crit.items.map((x) => x.term);
    const cardId = `${run}-cand-${c.index}`;
    const chips = c.criterion_scores.map((s, k) => el("button", { class: "chip", type: "button",
      onclick: () => { const m = document.getElementById(`${cardId}-c${k}`); if (m) { m.scrollIntoView({ block: "center" }); m.classList.add("flash"); setTimeout(() => m.classList.remove("flash"), 900); } } },
      `${k + 1}. ${terms[k] || "criterion"}: ${fmt(s, 1)}`));
    if (c.other_points_score !== null && c.other_points_score !== undefined) chips.push(el("span", { class: "chip other" }, `Other Point(s): ${fmt(c.other_points_score, 1)}`));
    const correctness = c.is_correct === true ? el("span", { class: "badge good" }, "correct") :
      c.is_correct === false ? el("span", { class: "badge bad" }, "incorrect") : null;
    return el("div", { class: "card" + (c.is_correct === true ? " is-correct" : "") + (item.chosen === c.index ? " is-chosen" : ""), id: cardId },
      el("div", { class: "card-head" }, el("span", { class: "role" }, c.role), correctness,
        el("span", { class: "score", title: "overall score (last box)" }, c.score === null ? "✗" : fmt(c.score, 1)),
        c.expected_score !== null && c.expected_score !== undefined ? el("span", { class: "expected", title: "expected score" }, `E ${fmt(c.expected_score)}`) : null,
        c.score_std !== null && c.score_std !== undefined ? el("span", { class: "expected", title: "spread of the sampled scores" }, `± ${fmt(c.score_std)}`) : null,
        c.score_entropy !== null && c.score_entropy !== undefined ? el("span", { class: "expected", title: "entropy of the score distribution (nats)" }, `H ${fmt(c.score_entropy)}`) : null,
        el("span", { class: `status s-${c.status}` }, c.status), c.flags.map((f) => el("span", { class: "flag" }, f))),
      distView(c.distribution),
      c.error ? el("p", { class: "warning" }, c.error) : null,
      chips.length ? el("div", { class: "chips" }, chips) : null,
      el("p", { class: "cost" }, `${fmt(c.tokens_in, 0)} tokens in, ${fmt(c.tokens_out, 0)} out · ${fmt(c.seconds)} s` +
        (c.attempts > 1 ? ` · ${c.attempts} attempts` : "")),
      el("details", { class: "response", open: true }, el("summary", {}, "response"),
        el("pre", {}, c.response === null || c.response === undefined ? "(response not recorded)" : c.response)),
      el("details", { class: "judgment", open: true }, el("summary", {}, "judgment"),
        c.evaluation ? markedText(c.evaluation, c.spans, terms, cardId) : el("p", { class: "note" }, "(judgment text not recorded)")));
  }
  let currentNav = { prev: null, next: null };
  document.addEventListener("keydown", (e) => {
    if ($("#view-item").hidden || e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j" && currentNav.next) location.hash = currentNav.next;
    else if (e.key === "k" && currentNav.prev) location.hash = currentNav.prev;
    else if (e.key === "u") location.hash = lastListHash;
  });
  function renderItem(run, n) {
    const v = $("#view-item");
    v.replaceChildren(el("p", { class: "note" }, "loading…"));
    getItem(run, n, (item) => {
      if (!item) return showError(`no item #${n}`);
      // previous / next walk the list as last filtered (run A); run B's items go by position
      let prev = n > 0 ? n - 1 : null;
      let next = n + 1;
      if (run === "a") {
        const list = filtered(new URLSearchParams(lastListHash.split("?")[1] || "")).map((r) => r.n);
        const at = list.indexOf(n);
        prev = at > 0 ? list[at - 1] : at === -1 && n > 0 ? n - 1 : null;
        next = at >= 0 ? (at + 1 < list.length ? list[at + 1] : null) : n + 1 < state.index.length ? n + 1 : null;
      }
      const href = (k) => `#item/${run === "a" ? "" : run + "/"}${k}`;
      const nav = el("div", { class: "item-nav" },
        el("a", { href: lastListHash, id: "back" }, "‹ back to the list"),
        prev !== null ? el("a", { href: href(prev), id: "prev-item" }, "‹ previous") : null,
        next !== null ? el("a", { href: href(next), id: "next-item" }, "next ›") : null,
        el("span", { class: "note" }, "keys: j / k next / previous, u back"));
      currentNav = { prev: prev !== null ? href(prev) : null, next: next !== null ? href(next) : null };
      const head = el("h2", {}, el("span", { class: "item-id" }, item.id), " ",
        el("span", { class: "subset" }, item.subset), " ",
        el("span", { class: `verdict v-${item.verdict}` }, item.verdict),
        el("span", { class: "gap" }, ` gap ${gapText(item.gap)}`), run === "b" ? el("span", { class: "badge" }, " run B") : null);
      const grid = el("div", { class: "cands", style: `--cols:${Math.min(item.candidates.length, 3)}` },
        item.candidates.map((c) => candidateCard(c, item, run)));
      v.replaceChildren(nav, head,
        el("div", { class: "top" },
          el("div", { class: "panel" }, el("h3", {}, "Query"), queryView(item.query)),
          el("div", { class: "panel" }, el("h3", {}, "Criteria"), criteriaView(item.criteria))),
        el("h3", {}, "Candidates"), grid);
      const nb = state.comparison && run === "a" ? state.comparison.positions_b[item.id] : undefined;
      if (nb !== undefined) {  // the same item in run B, below, judged by the other scorer
        const section = el("div", { class: "run-b", id: "run-b" }, el("p", { class: "note" }, "loading run B…"));
        v.append(section);
        getItem("b", nb, (other) => {
          const changed = other.verdict !== item.verdict;
          section.replaceChildren(
            el("h3", {}, `Run B: ${state.comparison.title} `, el("span", { class: `verdict v-${other.verdict}` }, other.verdict),
              changed ? el("span", { class: "badge bad" }, `verdict changed from ${item.verdict}`) : null),
            el("div", { class: "cands", style: `--cols:${Math.min(other.candidates.length, 3)}` },
              other.candidates.map((c) => candidateCard(c, other, "b"))));
        });
      }
    });
  }

  // ---- changed verdicts (cerm view RUN_A --compare RUN_B) -----------------------------------
  function renderCompare() {
    const c = state.comparison;
    $("#view-compare").replaceChildren(
      el("h2", {}, `${c.changed} of ${c.shared} shared items changed verdict`),
      el("p", { class: "note" }, `run B: ${c.title} (${c.source}); only in A: ${c.only_a}, only in B: ${c.only_b}`),
      el("table", { class: "grid list", id: "compare-list" },
        el("thead", {}, el("tr", {}, ["id", "subset", "verdict A", "verdict B", "scores A", "scores B"].map((h) => el("th", {}, h)))),
        el("tbody", {}, c.rows.map((r) => el("tr", { class: "row" },
          el("td", {}, el("a", { href: `#item/${r.n_a}` }, r.id)), el("td", {}, r.subset),
          el("td", {}, el("span", { class: `verdict v-${r.verdict_a}` }, r.verdict_a)),
          el("td", {}, el("a", { href: `#item/b/${r.n_b}` }, el("span", { class: `verdict v-${r.verdict_b}` }, r.verdict_b))),
          el("td", { class: "num" }, scoresText(r.scores_a)), el("td", { class: "num" }, scoresText(r.scores_b)))))));
  }

  function init(meta, index, comparison) {
    state.meta = meta;
    state.index = index;
    state.comparison = comparison;
    setupFilters();
    window.addEventListener("hashchange", route);
    route();
  }
  return { init, chunk, state };
})();
