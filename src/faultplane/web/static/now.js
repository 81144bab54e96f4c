// Now: every live, pending, awaiting-approval and queued experiment, kept current by the
// event stream (queued ones with why each waits and when the queue's forecast starts
// it); one Abort per experiment and one Abort all + freeze, each confirmed first.
"use strict";
(() => {
  const { el } = fp;
  const LIVE = new Set(["PENDING", "ACTIVE", "PENDING_APPROVAL", "QUEUED"]);
  const live = new Map(); // id -> injection (JSON of faultplane.v1.Injection)
  const forecast = new Map(); // id -> its ListQueue row (what starts when)
  const list = document.getElementById("experiments");
  const queuedList = document.getElementById("queued");
  const queuedHeading = document.getElementById("queued-heading");
  const summary = document.getElementById("summary");
  const result = document.getElementById("result");

  function guardText(inj) {
    const steady = (inj.request || {}).steady_state || {};
    if (!steady.slo) return el("span", { class: "note", text: "no steady state" });
    const r = (inj.readings || []).slice(-1)[0];
    const min = steady.min !== undefined ? steady.min : "baseline";
    if (!r) return `${steady.slo}: no reading yet (min ${min}, abort after ${steady.abort_after || 0} s)`;
    const value = r.value !== undefined ? Number(r.value).toFixed(4) : "unreadable";
    const breaching = r.breach ? el("span", { class: "breach", text: ` ✖ BREACH ${Number(r.breach_seconds || 0).toFixed(1)} s of ${steady.abort_after || 0} s` })
      : el("span", { class: "ok", text: " ✔ within" });
    return el("span", {}, `${steady.slo}: ${value} (min ${min})`, breaching, el("span", { class: "note", text: ` at ${fp.time(r.at)}` }));
  }

  // When it starts: the queue's forecast, with a countdown while it is in the future.
  function startText(inj) {
    const row = forecast.get(inj.id);
    const at = row && row.status === "starts" ? fp.seconds(row.start) : null;
    return [fp.queueWhen(row), at && at > Date.now() / 1000 + 1 ? [" ", el("span", { class: "countdown", "data-ends": at })] : null];
  }

  function card(inj) {
    const request = inj.request || {};
    const services = fp.faults(request).map((f) => f.where).join("; ");
    const ends = fp.seconds(inj.ends_at);
    const queued = inj.state === "QUEUED";
    const abort = fp.mayStop
      ? el("button", { type: "button", class: "danger", "data-abort": inj.id, onclick: () => abortOne(inj.id) }, `Abort ${inj.id}`)
      : null;
    return el("article", { class: "card", "data-state": inj.state, "data-id": inj.id },
      el("header", {}, el("h2", {}, el("a", { href: `/experiments/${inj.id}`, text: inj.id })),
        el("span", { class: "state", "data-state": inj.state, text: inj.state })),
      el("p", { class: "hypothesis", text: request.hypothesis || "(no hypothesis)" }),
      el("dl", { class: "facts" },
        el("dt", { text: "Owner" }), el("dd", { text: inj.owner || "—" }),
        el("dt", { text: "Where" }), el("dd", { text: services }),
        queued ? null : [el("dt", { text: "Targets" }), el("dd", { text: `${(inj.targets || []).length} of ${(inj.matched || []).length} matched sidecars` })],
        el("dt", { text: "Fault" }), el("dd", { text: fp.faultText(request, false) }),
        queued ? [el("dt", { text: "Waits for" }), el("dd", { class: "waiting", text: inj.waiting_reason || inj.reason || "—" }),
          el("dt", { text: "Starts" }), el("dd", { class: "starts" }, startText(inj))]
          : [el("dt", { text: "Started" }), el("dd", { text: inj.activated_at ? fp.time(inj.activated_at) : `not yet (created ${fp.time(inj.created_at)})` })],
        el("dt", { text: "Ends" }), el("dd", {}, ends ? `${fp.time(inj.ends_at)} ` : `${request.duration_seconds || 0} s after all targets ACK`,
          ends ? el("span", { class: "countdown", "data-ends": ends }) : null),
        el("dt", { text: "Guard" }), el("dd", { class: "guard" }, guardText(inj))),
      inj.reason && !queued ? el("p", { class: "note", text: inj.reason }) : null,
      abort);
  }

  // Live ones newest first; queued ones in the order the forecast starts them.
  function render() {
    const all = [...live.values()];
    const shown = all.filter((i) => i.state !== "QUEUED").sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    const order = [...forecast.keys()];
    const rank = (i) => (order.includes(i.id) ? order.indexOf(i.id) : order.length);
    const queued = all.filter((i) => i.state === "QUEUED").sort((a, b) => rank(a) - rank(b));
    list.replaceChildren(...shown.map(card));
    if (!shown.length) list.append(el("p", { class: "empty", text: "No experiment is live: any latency you see is not faultplane's." }));
    queuedList.replaceChildren(...queued.map(card));
    queuedHeading.hidden = !queued.length;
    queuedHeading.textContent = `Queued (${queued.length}) — the queue page shows what starts when`;
    const services = [...new Set(shown.flatMap((i) => fp.faults(i.request || {}).map((f) => f.where.split(" ")[0])))];
    summary.textContent = `${shown.length} live experiment${shown.length === 1 ? "" : "s"}${services.length ? " on " + services.join(", ") : ""}, ${queued.length} queued · updated ${fp.time(new Date().toISOString())}`;
    tickCountdowns();
  }

  function tickCountdowns() {
    const now = Date.now() / 1000;
    for (const node of document.querySelectorAll("main .countdown"))
      node.textContent = `(in ${fp.duration(Number(node.dataset.ends) - now)})`;
  }
  setInterval(tickCountdowns, 1000);

  async function abortOne(id) {
    const inj = live.get(id);
    const what = inj ? `${fp.faultText(inj.request || {})} on ${(inj.targets || []).length} sidecars` : id;
    const text = inj && inj.state === "QUEUED" ? `This cancels queued ${id} (${fp.faultText(inj.request || {})}): it will not start.`
      : `This withdraws ${what}, now.`;
    if (!(await fp.confirm(`Abort ${id}?`, text, `Abort ${id}`))) return;
    const r = await fp.post("/actions/abort", { id });
    fp.showResult(result, `Abort ${id}`, r.ok ? [r.data.injection] : [], r.ok ? "" : `${r.status}: ${r.data.error}`);
  }

  const abortAll = document.getElementById("abort-all");
  if (abortAll) abortAll.addEventListener("click", async () => {
    const names = [...live.keys()];
    const text = `This freezes new injections until unfrozen, withdraws every live experiment and cancels every queued one: ${names.length ? names.join(", ") : "none is live or queued now"}.`;
    if (!(await fp.confirm("Abort all + freeze?", text, "Abort all + freeze"))) return;
    abortAll.disabled = true;
    const r = await fp.post("/actions/abort-all", { reason: "abort all + freeze from the dashboard" });
    abortAll.disabled = false;
    fp.showResult(result, "Abort all + freeze", r.ok ? r.data.aborted : [], r.ok ? "" : `${r.status}: ${r.data.error}`);
    if (r.ok) fp.banner(r.data.freeze);
  });

  fp.stream("/events", {
    snapshot(data) {
      live.clear();
      for (const inj of data.injections) live.set(inj.id, inj);
      setForecast(data.queue || []);
      fp.banner(data.freeze);
      fp.blackoutBanner(data.blackouts);
      render();
    },
    injection(event) {
      const inj = event.injection;
      const before = live.get(inj.id);
      if (LIVE.has(inj.state)) {
        if (before && (!inj.readings || !inj.readings.length)) inj.readings = before.readings;
        live.set(inj.id, inj);
      } else live.delete(inj.id);
      render();
    },
    readings(data) {
      const inj = live.get(data.id);
      if (!inj) return;
      inj.readings = data.readings.slice(-1);
      const node = list.querySelector(`article[data-id="${CSS.escape(data.id)}"] .guard`);
      if (node) node.replaceChildren(guardText(inj));
    },
    queue(data) { setForecast(data.rows); render(); },
    freeze: fp.banner,
    blackouts: fp.blackoutBanner,
  }, (text) => { summary.textContent = text; });

  function setForecast(rows) {
    forecast.clear();
    for (const row of rows) forecast.set(row.injection_id, row);
  }
})();
