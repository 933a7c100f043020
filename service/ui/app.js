// The playground talks to the service through its public HTTP API only, with relative URLs, so it works
// wherever the app is mounted (behind a proxy prefix too). No framework, no build step, no CDN.
"use strict";

const api = (path) => new URL("../" + path, window.location.href).toString();
const $ = (sel) => document.querySelector(sel);
const historyItems = []; // oldest first: {id, label} for catalogue items, {text: {title}, label} for text entries
const records = new Map(); // item id -> record, filled by search results and GET /items
let catalogueSize = 0;
let lastAdded = null;

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = $("#token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function call(method, path, body) {
  const resp = await fetch(api(path), {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${method} /${path.split("?")[0]}: ${resp.status} ${data.detail || resp.statusText}`);
  return data;
}

function showError(err) {
  const box = $("#error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function label(id, record) {
  return (record && (record.title || (record.categories || []).slice(-1)[0] || record.brand)) || id;
}

async function recordOf(id) {
  if (!records.has(id)) records.set(id, (await call("GET", "items/" + encodeURIComponent(id))).record);
  return records.get(id);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

async function refreshInfo() {
  try {
    const r = await call("GET", "readyz");
    catalogueSize = r.items;
    $("#model-info").textContent =
      `model ${r.model.name} ${r.model.version} · ${r.items} items (${r.cold_items} cold) · ${r.index} index`;
  } catch (err) {
    $("#model-info").textContent = "not ready";
    showError(err);
  }
}

function renderHistory() {
  const list = $("#history");
  list.replaceChildren(...historyItems.map((h, n) => el("li", { "data-id": h.id || "", class: h.text ? "text" : "" },
    h.label, h.id ? el("span", { class: "id" }, h.id) : el("span", { class: "tag text" }, "text"),
    el("button", { type: "button", title: "remove", onclick: () => { historyItems.splice(n, 1); renderHistory(); } }, "×"),
  )));
  $("#history-empty").hidden = historyItems.length > 0;
  $("#recommend-btn").disabled = historyItems.length === 0;
}

function addToHistory(entry) {
  historyItems.push(entry);
  renderHistory();
}

async function search(event) {
  event.preventDefault();
  showError(null);
  try {
    const r = await call("GET", `search?q=${encodeURIComponent($("#q").value)}&k=10`);
    $("#search-results").replaceChildren(...r.items.map((hit) => {
      records.set(hit.item_id, hit.record);
      const add = () => addToHistory({ id: hit.item_id, label: label(hit.item_id, hit.record) });
      return el("li", { "data-id": hit.item_id },
        el("button", { type: "button", class: "add-btn", title: "add to the history", onclick: add }, "+"),
        label(hit.item_id, hit.record), el("span", { class: "id" }, hit.item_id),
        hit.cold ? el("span", { class: "tag" }, "cold") : "",
        el("span", { class: "id" }, hit.score.toFixed(3)),
      );
    }));
  } catch (err) { showError(err); }
}

function historyBody() {
  return historyItems.map((h) => (h.id ? h.id : h.text));
}

function bar(kind, value, scale) {
  const half = 130; // px either side of the axis
  const w = Math.min(half, Math.abs(value) / scale * half);
  const left = value >= 0 ? half : half - w;
  return el("div", { class: `bar ${kind}`, style: `left:${left}px;width:${w}px` });
}

async function recommend() {
  showError(null);
  const k = Math.max(1, parseInt($("#k").value, 10) || 10);
  try {
    const r = await call("POST", "recommend", { history: historyBody(), k, explain: true });
    const scale = Math.max(1e-9, ...r.items.flatMap((it) => [Math.abs(it.semantic), Math.abs(it.collaborative)]));
    const rows = [];
    for (const [n, it] of r.items.entries()) {
      const rec = await recordOf(it.item_id).catch(() => ({}));
      const barsBox = el("div", { class: "bars" }, bar("semantic", it.semantic, scale), bar("collaborative", it.collaborative, scale));
      const row = el("tr", { "data-id": it.item_id, class: it.item_id === lastAdded ? "new" : "" },
        el("td", {}, String(n + 1)),
        el("td", {}, label(it.item_id, rec), el("span", { class: "id" }, it.item_id)),
        el("td", { class: "score" }, it.score.toFixed(4)),
        el("td", {}, barsBox, el("div", { class: "parts" },
          el("span", { class: "semantic", "data-value": String(it.semantic) }, it.semantic.toFixed(4)), " | ",
          el("span", { class: "collaborative", "data-value": String(it.collaborative) }, it.collaborative.toFixed(4)))),
      );
      rows.push(row);
    }
    $("#recs tbody").replaceChildren(...rows);
  } catch (err) { showError(err); }
}

async function addItem(event) {
  event.preventDefault();
  showError(null);
  const id = $("#new-id").value.trim();
  const item = { item_id: id, title: $("#new-title").value.trim() };
  const cats = $("#new-categories").value.split(",").map((c) => c.trim()).filter(Boolean);
  if (cats.length) item.categories = cats;
  try {
    await call("POST", "items", { items: [item] });
    records.set(id, { title: item.title, categories: cats });
    lastAdded = id;
    await refreshInfo();
    let where = "add a history to see where it ranks";
    if (historyItems.length) {
      const k = Math.min(catalogueSize, 1000);
      const r = await call("POST", "recommend", { history: historyBody(), k });
      const rank = r.items.findIndex((it) => it.item_id === id);
      where = rank >= 0 ? `ranks #${rank + 1} of ${catalogueSize} for this history` : `not in the top ${k} for this history`;
      await recommend();
    }
    $("#add-result").textContent = `added ${id}: ${where}`;
  } catch (err) { showError(err); }
}

$("#search-form").addEventListener("submit", search);
$("#text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const title = $("#text-title").value.trim();
  if (title) addToHistory({ text: { title }, label: title });
  $("#text-title").value = "";
});
$("#recommend-btn").addEventListener("click", recommend);
$("#clear-btn").addEventListener("click", () => { historyItems.length = 0; renderHistory(); $("#recs tbody").replaceChildren(); });
$("#add-form").addEventListener("submit", addItem);
renderHistory();
refreshInfo();
