// Shared by the live pages: DOM building (text only, never HTML strings), times, the
// confirmation dialog, CSRF-carrying POSTs, the banners, the queue's words and the event
// stream.
"use strict";
const fp = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const mayStop = document.body.dataset.mayStop === "yes";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== undefined && c !== null && c !== false)
        node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const seconds = (iso) => (iso ? Date.parse(iso) / 1000 : null);
  function time(iso) {
    if (!iso) return "—";
    return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    const m = Math.floor(s / 60), r = s % 60;
    return m ? `${m} min ${String(r).padStart(2, "0")} s` : `${r} s`;
  }

  function faults(request) {
    const parts = request.faults && request.faults.length
      ? request.faults : [{ target: request.target || {}, fault: request.fault || {} }];
    return parts.map(({ target, fault }) => {
      const kind = fault.type || ["latency", "abort", "bandwidth"].find((k) => fault[k]) || "fault";
      const fields = { ...(fault[kind] || {}), ...fault };
      const shown = Object.entries(fields)
        .filter(([k, v]) => !["type", "latency", "abort", "bandwidth", "pattern"].includes(k) && typeof v !== "object")
        .map(([k, v]) => (k === "percentage" ? `${v}% of requests` : `${k}=${v}`)).join(" ");
      const where = `${target.service || "?"}${target.upstream ? " → " + target.upstream : " inbound"}`
        + (target.selector ? ` [${target.selector}]` : "");
      return { kind, shown, where, pattern: fault.pattern ? fault.pattern.kind : "" };
    });
  }
  // "abort http_status=503 30% of requests", with " on <service and direction>" if asked.
  const faultText = (request, where = true) =>
    faults(request).map((f) => `${f.kind} ${f.shown}${f.pattern ? " (" + f.pattern + " pattern)" : ""}${where ? " on " + f.where : ""}`).join("; ");

  function confirm(title, text, go) {
    const dialog = document.getElementById("confirm");
    dialog.querySelector("#confirm-title").textContent = title;
    dialog.querySelector("#confirm-text").textContent = text;
    dialog.querySelector("#confirm-go").textContent = go;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) =>
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true }));
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
    return { ok: response.ok, status: response.status, data };
  }

  // After an abort: each injection's state and every target's answer to the withdrawal.
  function showResult(section, heading, injections, error) {
    section.hidden = false;
    section.replaceChildren(el("h2", { text: heading }));
    if (error) { section.append(el("p", { class: "error", role: "alert", text: `✖ ${error}` })); return; }
    if (!injections.length) section.append(el("p", { text: "Nothing was live: nothing to withdraw." }));
    for (const inj of injections) {
      const last = (inj.transitions || []).slice(-1)[0] || {};
      section.append(el("p", {}, el("a", { href: `/experiments/${inj.id}`, text: inj.id }), " ",
        el("span", { class: "state", "data-state": inj.state, text: inj.state }), ` ${inj.reason || ""}`));
      section.append(evidenceList(last.evidence || [], "withdrawal"));
    }
  }

  function evidenceList(evidence, what) {
    if (!evidence.length) return el("p", { class: "note", text: `no sidecar answer recorded for this ${what}` });
    return el("ul", { class: "evidence" }, evidence.map((e) => el("li", { "data-outcome": e.outcome },
      e.outcome === "acked" ? "✔ " : "✖ ", el("code", { text: e.sidecar }),
      ` ${e.outcome.toUpperCase()} ${e.type} version ${e.version} at ${time(e.at)}`, e.error ? `: ${e.error}` : "")));
  }

  // Banners: one line per source ("freeze", "blackout"), each shown
  // while its source sets a text, in the order sources first appeared.
  const banners = new Map();
  function setBanner(source, text) {
    if (text) banners.set(source, text); else banners.delete(source);
    const node = document.getElementById("banner");
    node.replaceChildren(...[...banners].map(([name, line]) => el("p", { "data-banner": name, text: line })));
    node.hidden = banners.size === 0;
  }
  const banner = (freeze) => setBanner("freeze", freeze && freeze.frozen
    ? `❄ FROZEN: no new injection may start${freeze.until ? " until " + time(freeze.until) : " until unfrozen"}`
      + ` (by ${freeze.by || "?"}: ${freeze.reason || "no reason given"})` : "");

  // The blackouts in effect now (the stream's `blackouts`, sent again when one begins or
  // ends): named, with when each ends; nothing starts until then.
  const blackoutBanner = (state) => setBanner("blackout", state && state.active && state.active.length
    ? "⛔ BLACKOUT: no experiment starts now — " + state.active.map((b) => `${b.name} until ${time(b.ends)}`).join("; ")
    : "");

  // A ListQueue row in words: when it starts (or why not), for Now and the queue page.
  function queueWhen(row) {
    if (!row) return "not in the forecast yet";
    const at = seconds(row.start);
    switch (row.status) {
      case "running": return "running now";
      case "starts": return at && at > Date.now() / 1000 + 1 ? `expected to start ${time(row.start)}` : "expected to start now";
      case "expires": return `will expire unstarted${row.end ? " at " + time(row.end) : ""}`;
      default: return "no start in the forecast: still waiting at its horizon";
    }
  }

  // EventSource reconnects by itself; each (re)connection starts with a snapshot.
  function stream(url, handlers, status) {
    const source = new EventSource(url);
    for (const [name, fn] of Object.entries(handlers))
      source.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    // CLOSED: the server refused the stream (a session that expired): only a reload helps.
    source.addEventListener("error", () => status && status(source.readyState === EventSource.CLOSED
      ? "disconnected: reload the page (log in again if asked)" : "reconnecting…"));
    return source;
  }

  return { el, time, seconds, duration, faults, faultText, confirm, post, showResult, evidenceList, banner, setBanner, blackoutBanner, queueWhen, stream, mayStop };
})();
