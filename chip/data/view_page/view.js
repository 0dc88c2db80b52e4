// The page of `chip data view`: pages of preference rows, loaded chunk by chunk from files written
// beside the page. Every dataset string reaches the page through textContent or a text node, never
// as HTML, so a row holding "<script>" shows those characters.
"use strict";

(function () {
  const V = window.CHIP_VIEW;
  const waiting = new Map(); // chunk number -> resolve function of its pending load
  const chunks = new Map(); // chunk number -> Promise of its rows
  let renderCount = 0;

  window.chipView = {
    chunk(number, rows) {
      const resolve = waiting.get(number);
      waiting.delete(number);
      if (resolve) resolve(rows);
    },
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function loadChunk(number) {
    if (!chunks.has(number)) {
      chunks.set(
        number,
        new Promise((resolve, reject) => {
          waiting.set(number, resolve);
          const script = document.createElement("script");
          script.src = `${V.files}/rows/${String(number).padStart(6, "0")}.js`;
          script.onerror = () => {
            chunks.delete(number);
            reject(new Error(`cannot load ${script.src}`));
          };
          document.head.append(script);
        }),
      );
    }
    return chunks.get(number);
  }

  // ---- state: filter and page, kept in the URL's hash so a page can be reloaded or shared ----
  function readState() {
    const params = new URLSearchParams(location.hash.slice(1));
    const filter = V.filters.some((f) => f.key === params.get("filter")) ? params.get("filter") : "all";
    const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    return { filter, page };
  }

  function go(filter, page) {
    const hash = `#filter=${encodeURIComponent(filter)}&page=${page}`;
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function filterRows(key) {
    const filter = V.filters.find((f) => f.key === key);
    return filter.rows; // null: every row
  }

  function countOf(key) {
    const rows = filterRows(key);
    return rows === null ? V.total : rows.length;
  }

  // ---- text with highlighted segments ----
  function mergeSpans(spans) {
    const sorted = spans.map((s) => [s[0], s[1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const merged = [];
    for (const span of sorted) {
      const last = merged[merged.length - 1];
      if (last && span[0] < last[1]) last[1] = Math.max(last[1], span[1]);
      else merged.push(span);
    }
    return merged;
  }

  function highlighted(text, spans, className) {
    const box = el("div", className);
    // Spans count Unicode code points (Python's str indices), not UTF-16 units.
    const chars = Array.from(text);
    let position = 0;
    for (const [start, end] of mergeSpans(spans || [])) {
      if (start > position) box.append(chars.slice(position, start).join(""));
      box.append(el("mark", null, chars.slice(start, end).join("")));
      position = end;
    }
    if (position < chars.length) box.append(chars.slice(position).join(""));
    return box;
  }

  // ---- one row ----
  function problemList(className, title, problems) {
    const box = el("div", className);
    box.append(el("h3", null, title));
    const list = el("ul");
    for (const [field, kind, reason] of problems) {
      const item = el("li");
      item.append(el("code", null, field), " ", reason, " ", el("span", "kind", `(${kind})`));
      list.append(item);
    }
    box.append(list);
    return box;
  }

  function imageFigure(image, index) {
    const figure = el("figure", "image");
    const caption = el("figcaption", null, image.note ? `image ${index + 1}: ${image.note}` : `image ${index + 1}`);
    const sources = [image.thumb, image.full].filter(Boolean);
    if (sources.length) {
      const img = el("img");
      img.loading = "lazy";
      img.alt = `image ${index + 1}`;
      img.onerror = () => {
        if (sources.length) img.src = sources.shift();
        else {
          img.remove();
          caption.append(" (the browser cannot show this file)");
        }
      };
      img.src = sources.shift();
      if (image.full) {
        const link = el("a");
        link.href = image.full;
        link.target = "_blank";
        link.append(img);
        figure.append(link);
      } else figure.append(img);
    }
    figure.append(caption);
    return figure;
  }

  function corruptFigures(row) {
    const box = el("div", "corrupt");
    box.append(el("h3", null, "corrupted, as training sees it"));
    if (!row.corrupt) {
      box.append(el("p", "note", row.corrupt_note));
      return box;
    }
    const tiles = el("div", "tiles");
    for (const tile of row.corrupt) {
      const figure = el("figure", "tile");
      const img = el("img");
      img.loading = "lazy";
      img.src = tile.src;
      img.alt = tile.label;
      figure.append(img, el("figcaption", null, tile.label));
      tiles.append(figure);
    }
    box.append(tiles);
    return box;
  }

  function promptBox(prompt) {
    if (typeof prompt === "string") return el("div", "prompt", prompt);
    const box = el("div", "prompt");
    for (const message of prompt) {
      const line = el("div", "message");
      line.append(el("span", "role", message.role), message.text);
      box.append(line);
    }
    return box;
  }

  function rowCard(row) {
    const status = row.issues.length ? "bad" : row.warnings.length ? "warn" : "ok";
    const card = el("article", `row ${status}`);
    card.id = `row-${row.row}`;
    card.dataset.row = row.row;
    const head = el("h2", null, row.loc);
    if (row.id !== null) head.append(" · id ", el("code", null, row.id));
    card.append(head);
    if (row.issues.length) card.append(problemList("issues", "issues (the row is not used for training)", row.issues));
    if (row.warnings.length) card.append(problemList("warnings", "warnings (the row is used)", row.warnings));

    const visuals = el("div", "visuals");
    const images = el("div", "original");
    images.append(el("h3", null, "image"));
    const figures = el("div", "images");
    row.images.forEach((image, i) => figures.append(imageFigure(image, i)));
    if (!row.images.length) figures.append(el("p", "note", "no image"));
    images.append(figures);
    visuals.append(images, corruptFigures(row));
    card.append(visuals);

    const text = el("div", "text");
    text.append(el("h3", null, "prompt"));
    text.append(row.prompt === null ? el("p", "note", "(missing)") : promptBox(row.prompt));
    for (const side of ["chosen", "rejected"]) {
      text.append(el("h3", null, side));
      if (row[side] === null) text.append(el("p", "note", "(missing or unreadable)"));
      else text.append(highlighted(row[side], row.spans[side], `response ${side}`));
    }
    if (row.seg_note) text.append(el("p", "note segments", row.seg_note));
    if (row.raw) {
      const raw = el("details", "raw");
      raw.append(el("summary", null, "the row as stored"), el("pre", null, row.raw));
      text.append(raw);
    }
    card.append(text);
    return card;
  }

  // ---- the page ----
  async function render() {
    const { filter, page } = readState();
    const renderId = ++renderCount;
    const rows = filterRows(filter);
    const count = countOf(filter);
    const pages = Math.max(1, Math.ceil(count / V.page_size));
    const current = Math.min(page, pages);
    const first = (current - 1) * V.page_size;
    const wanted = [];
    for (let i = first; i < Math.min(first + V.page_size, count); i++) wanted.push(rows === null ? i : rows[i]);

    document.getElementById("filter").value = filter;
    document.getElementById("page").value = current;
    document.getElementById("page").max = pages;
    document.getElementById("page-count").textContent = `of ${pages.toLocaleString()}`;
    document.getElementById("prev").disabled = current <= 1;
    document.getElementById("next").disabled = current >= pages;
    const status = document.getElementById("status");
    const main = document.getElementById("rows");
    main.dataset.state = "loading";
    status.textContent = "loading…";

    const numbers = [...new Set(wanted.map((r) => Math.floor(r / V.page_size)))];
    let loaded;
    try {
      loaded = await Promise.all(numbers.map(loadChunk));
    } catch (error) {
      status.textContent = String(error.message);
      main.dataset.state = "error";
      return;
    }
    if (renderId !== renderCount) return; // a newer page was asked for meanwhile
    const byRow = new Map();
    loaded.forEach((chunkRows) => chunkRows.forEach((row) => byRow.set(row.row, row)));
    main.replaceChildren(...wanted.map((r) => rowCard(byRow.get(r))));
    status.textContent = count
      ? `rows ${(first + 1).toLocaleString()}–${(first + wanted.length).toLocaleString()} of ${count.toLocaleString()}`
      : "no rows";
    main.dataset.filter = filter;
    main.dataset.page = String(current);
    main.dataset.state = "ready";
    window.scrollTo(0, 0);
  }

  function setUp() {
    document.getElementById("source").textContent = V.source;
    document.title = `chip data view: ${V.source}`;
    const summary = document.getElementById("summary");
    for (const line of V.summary) summary.append(el("p", null, line));
    const select = document.getElementById("filter");
    for (const filter of V.filters) {
      const option = el("option", null, `${filter.label} (${countOf(filter.key).toLocaleString()})`);
      option.value = filter.key;
      select.append(option);
    }
    select.onchange = () => go(select.value, 1);
    const state = () => readState();
    document.getElementById("prev").onclick = () => go(state().filter, state().page - 1);
    document.getElementById("next").onclick = () => go(state().filter, state().page + 1);
    document.getElementById("page").onchange = (event) => go(state().filter, parseInt(event.target.value, 10) || 1);
    window.addEventListener("hashchange", render);
    render();
  }

  setUp();
})();
