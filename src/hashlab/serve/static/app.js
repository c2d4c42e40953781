// hashlab search page: plain JavaScript, no build step, nothing fetched but this server's API.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    info: $("info"), drop: $("drop-zone"), file: $("file-input"), queryImage: $("query-image"),
    dropHint: $("drop-hint"), caption: $("query-caption"), textForm: $("text-form"),
    text: $("text-input"), controls: $("controls"), radiusRow: $("radius-row"),
    modeK: $("mode-k"), modeRadius: $("mode-radius"), k: $("k-input"), radius: $("radius-input"),
    exact: $("exact-input"), lat: $("near-lat"), lon: $("near-lon"), km: $("near-km"),
    tags: $("tags-input"), start: $("time-start"), end: $("time-end"),
    lambda: $("rerank-lambda"), searchButton: $("search-button"), clear: $("clear-filters"),
    status: $("status"), error: $("error"), warnings: $("warnings"), results: $("results"),
  };

  let info = null;       // GET /v1/info
  let query = null;      // {body: {...one query field...}, image: url|null, caption: str}
  let seq = 0;           // the latest request; older answers are dropped
  let searches = 0;      // finished searches (data-search-count, for tests)

  // ---------------------------------------------------------------- messages

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.textContent = "";
    el.error.hidden = true;
  }

  function setStatus(text, state) {
    el.status.textContent = text;
    el.status.dataset.state = state;
  }

  async function errorMessage(response) {
    // the API answers {"error": {"code", "message"}}; anything else is shown as it came
    let text = "";
    try { text = await response.text(); } catch (e) { /* body unreadable */ }
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) {
        return body.error.message + (body.error.code ? " (" + body.error.code + ")" : "");
      }
      if (body && body.detail) {  // a plain FastAPI error
        return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (e) { /* not JSON */ }
    return "HTTP " + response.status + (text ? ": " + text.slice(0, 300) : "");
  }

  // ---------------------------------------------------------------- run info

  async function loadInfo() {
    try {
      const response = await fetch("/v1/info");
      if (!response.ok) throw new Error(await errorMessage(response));
      info = await response.json();
    } catch (e) {
      el.info.textContent = "could not load the run";
      showError("Could not load /v1/info: " + e.message);
      document.body.dataset.ready = "error";
      return;
    }
    const code = info.binary ? info.nbits + "-bit binary codes, Hamming distance"
                             : info.dim + "-d float codes, cosine similarity";
    const shape = (info.image_shape || []).join("×");
    const items = info.modality === "text" ? " texts" : " images " + shape;
    el.info.textContent = info.run + " · " + code + " · index " + info.index_kind + " · " +
      info.count + items + " · " + (info.classes || []).length + " classes" +
      (info.cross_modal ? " · cross-modal: query by image or text" : "");
    el.radiusRow.hidden = !info.binary;
    if (info.binary && info.exact_radius !== null && info.exact_radius !== undefined) {
      el.radius.title = "this index is exact up to radius " + info.exact_radius;
    }
    if (!info.binary) el.modeK.checked = true;
    el.textForm.hidden = !info.cross_modal;
    if (info.cross_modal) {
      document.querySelector("h1 .sub").textContent = "image and text search";
      el.status.textContent = "Pick an image or type a text to search.";
    }
    document.body.dataset.ready = "true";
  }

  // ---------------------------------------------------------------- building the request

  function numberOrNull(input) {
    const v = input.value.trim();
    if (v === "") return null;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(input.getAttribute("aria-label") ||
                                             input.name + ": not a number");
    return n;
  }

  function requestBody() {
    const body = Object.assign({}, query.body);
    if (info && info.binary && el.modeRadius.checked) {
      const r = numberOrNull(el.radius);
      if (r === null || r < 0 || !Number.isInteger(r)) {
        throw new Error("radius must be a whole number ≥ 0");
      }
      body.radius = r;
    } else {
      const k = numberOrNull(el.k);
      if (k === null || k < 1 || k > 1000 || !Number.isInteger(k)) {
        throw new Error("k must be a whole number from 1 to 1000");
      }
      body.k = k;
    }
    body.exact = el.exact.checked;

    const filters = {};
    const near = [numberOrNull(el.lat), numberOrNull(el.lon), numberOrNull(el.km)];
    const nearGiven = near.filter((v) => v !== null).length;
    if (nearGiven === 3) {
      filters.near = { lat: near[0], lon: near[1], km: near[2] };
    } else if (nearGiven > 0) {
      throw new Error("the near filter needs all of lat, lon and km");
    }
    const tags = el.tags.value.split(",").map((t) => t.trim()).filter((t) => t !== "");
    if (tags.length) filters.tags = tags;
    if (el.start.value || el.end.value) {
      filters.time = { start: el.start.value || null, end: el.end.value || null };
    }
    if (Object.keys(filters).length) body.filters = filters;

    const lambda = numberOrNull(el.lambda);
    if (lambda !== null) {
      if (!filters.near) throw new Error("re-rank λ needs the near filter (lat, lon and km)");
      body.rerank = { lambda: lambda };
    }
    return body;
  }

  // ---------------------------------------------------------------- searching

  async function search(newQuery) {
    const previous = query;
    if (newQuery) query = newQuery;
    if (!query) return;
    let body;
    try {
      body = requestBody();
    } catch (e) {
      // keep the query: fixing the control searches with it
      showQuery(query);
      el.searchButton.disabled = false;
      showError(e.message);
      setStatus("Not searched: fix the controls.", "error");
      return;
    }
    const mine = ++seq;
    el.results.setAttribute("aria-busy", "true");
    setStatus("Searching…", "loading");
    let response, data;
    try {
      response = await fetch("/v1/search", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body),
      });
      if (mine !== seq) return;
      if (!response.ok) throw new Error(await errorMessage(response));
      data = await response.json();
    } catch (e) {
      if (mine !== seq) return;
      el.results.removeAttribute("aria-busy");
      // a failed new query leaves the last good query and its results on the page
      if (newQuery && previous !== newQuery) query = previous;
      showError(e.message);
      setStatus("Search failed" + (query ? "; showing the previous results." : "."), "error");
      return;
    }
    if (mine !== seq) return;
    clearError();
    showQuery(query);
    renderResults(data);
    el.searchButton.disabled = false;
  }

  function showQuery(q) {
    if (q.image) {
      el.queryImage.src = q.image;
      el.queryImage.alt = "query: " + q.caption;
      el.queryImage.hidden = false;
      el.dropHint.hidden = true;
    } else {
      el.queryImage.removeAttribute("src");
      el.queryImage.hidden = true;
      el.dropHint.hidden = false;
    }
    el.drop.dataset.query = JSON.stringify(q.body.id !== undefined ? { id: q.body.id } :
                                           q.body.text !== undefined ? { text: q.body.text } :
                                           { image: q.caption });
    el.caption.textContent = q.caption;
  }

  function formatDistance(value, metric) {
    if (value === null || value === undefined) return "";
    return metric === "hamming" ? String(value) : Number(value).toFixed(3);
  }

  function renderResults(data) {
    const metric = data.metric || (info && info.binary ? "hamming" : "cosine");
    el.results.textContent = "";
    el.results.dataset.metric = metric;
    for (const hit of data.results) {
      const li = document.createElement("li");
      li.className = "result";
      li.dataset.id = hit.id;
      li.dataset.distance = hit.distance;
      li.dataset.label = hit.class_name !== null && hit.class_name !== undefined
        ? hit.class_name : "";

      const button = document.createElement("button");
      button.type = "button";
      const name = hit.class_name !== null && hit.class_name !== undefined
        ? hit.class_name : (hit.label !== null && hit.label !== undefined ? String(hit.label) : "?");
      button.setAttribute("aria-label", "item " + hit.id + ", " + name + ", distance " +
        formatDistance(hit.distance, metric) + ": search from this " +
        (!hit.thumbnail_url && typeof hit.text === "string" ? "text" : "image"));
      // an image hit shows its thumbnail; a text hit (a cross-modal run's text index) its text
      const isText = !hit.thumbnail_url && typeof hit.text === "string";
      let img = null;
      if (isText) {
        li.classList.add("text-result");
        li.dataset.text = hit.text;
        const quote = document.createElement("span");
        quote.className = "text";
        quote.textContent = hit.text;
        button.appendChild(quote);
      } else {
        img = document.createElement("img");
        img.src = hit.thumbnail_url || ("/v1/items/" + hit.id + "/image");
        img.alt = "";
        img.loading = "lazy";
        button.appendChild(img);
      }
      button.addEventListener("click", () => {
        search({ body: { id: hit.id }, image: img ? img.src : null,
                 caption: "item " + hit.id + " (" + name + ")" +
                          (isText ? ": “" + hit.text + "”" : "") });
      });
      li.appendChild(button);

      const caption = document.createElement("div");
      caption.className = "meta";
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = name;
      const distance = document.createElement("span");
      distance.className = "distance";
      distance.title = metric === "hamming" ? "Hamming distance" : "cosine distance";
      distance.textContent = formatDistance(hit.distance, metric);
      const key = document.createElement("span");
      key.className = "key";
      key.setAttribute("aria-hidden", "true");
      key.textContent = "d ";
      const right = document.createElement("span");
      right.append(key, distance);
      caption.append(label, right);
      li.appendChild(caption);

      const md = hit.metadata;
      if (md) {
        if (md.city) li.dataset.city = md.city;
        if (md.tags) li.dataset.tags = md.tags.join(",");
        if (md.time) li.dataset.time = md.time;
      }
      if (md && (md.city || (md.tags && md.tags.length))) {
        const where = document.createElement("div");
        where.className = "where";
        where.textContent = md.city || md.tags.join(", ");
        li.appendChild(where);
      }
      const tip = ["id " + hit.id];
      if (hit.score !== null && hit.score !== undefined && metric !== "hamming") {
        tip.push("score " + Number(hit.score).toFixed(3));
      }
      if (md) {
        if (md.lat !== null && md.lat !== undefined) {
          tip.push("at " + (md.city ? md.city + " " : "") + md.lat + ", " + md.lon);
        }
        if (md.tags && md.tags.length) tip.push("tags: " + md.tags.join(", "));
        if (md.time) tip.push("time " + md.time);
      }
      li.title = tip.join(" · ");
      el.results.appendChild(li);
    }

    const parts = [data.results.length + (data.results.length === 1 ? " result" : " results")];
    if (data.radius !== null && data.radius !== undefined) parts.push("radius " + data.radius);
    if (data.filtered_count !== null && data.filtered_count !== undefined) {
      parts.push(data.filtered_count + " items match the filters");
    }
    parts.push(data.exact ? "exact" : "not guaranteed exact");
    parts.push(metric);
    if (data.took_ms !== null && data.took_ms !== undefined) {
      parts.push(Number(data.took_ms).toFixed(1) + " ms");
    }
    const warnings = data.warnings || [];
    if (warnings.length) parts.push(warnings.length + (warnings.length === 1 ? " warning" : " warnings"));
    setStatus(parts.join(" · "), "done");
    el.status.dataset.exact = String(!!data.exact);

    el.warnings.textContent = "";
    for (const w of warnings) {
      const li = document.createElement("li");
      li.textContent = w;
      el.warnings.appendChild(li);
    }
    el.warnings.hidden = warnings.length === 0;

    el.results.removeAttribute("aria-busy");
    el.results.dataset.searchCount = String(++searches);
  }

  // ---------------------------------------------------------------- image input

  function bytesToBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    const chunk = 0x8000;
    for (let i = 0; i < bytes.length; i += chunk) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
    }
    return btoa(binary);
  }

  async function searchFile(file) {
    if (!file) return;
    clearError();
    let buffer;
    try {
      buffer = await file.arrayBuffer();
    } catch (e) {
      showError("Could not read " + file.name + ": " + e.message);
      return;
    }
    // the preview is a data: URL of the file itself: nothing leaves the page but the API call
    const b64 = bytesToBase64(buffer);
    const preview = "data:" + (file.type || "application/octet-stream") + ";base64," + b64;
    await search({ body: { image_b64: b64 }, image: preview, caption: file.name });
  }

  el.file.addEventListener("change", () => {
    const file = el.file.files && el.file.files[0];
    searchFile(file).finally(() => { el.file.value = ""; });  // the same file can be picked again
  });

  el.drop.addEventListener("click", (event) => {
    if (event.target.tagName !== "LABEL") el.file.click();
  });
  el.drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      el.file.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    el.drop.addEventListener(type, (event) => {
      event.preventDefault();
      el.drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    el.drop.addEventListener(type, () => el.drop.classList.remove("dragging"));
  }
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    el.drop.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) searchFile(files[0]);
  });
  // a file dropped next to the zone should not navigate away from the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // ---------------------------------------------------------------- other controls

  el.textForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.text.value.trim();
    if (!text) { showError("Type some text to search with."); return; }
    clearError();
    search({ body: { text: text }, image: null, caption: "“" + text + "”" });
  });

  el.controls.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  // any change of k, radius, exact or a filter searches again with the same query
  el.controls.addEventListener("change", (event) => {
    if (event.target === el.radius) el.modeRadius.checked = true;
    if (event.target === el.k) el.modeK.checked = true;
    if (query) search();
  });
  el.clear.addEventListener("click", () => {
    for (const input of [el.lat, el.lon, el.km, el.tags, el.start, el.end, el.lambda]) {
      input.value = "";
    }
    clearError();
    if (query) search();
  });

  loadInfo();
})();
