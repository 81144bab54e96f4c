// Now: every live, pending and awaiting-approval experiment, kept current by the event
// stream; one Abort per experiment and one Abort all + freeze, each confirmed first.
"use strict";
(() => {
  const { el } = fp;
  const LIVE = new Set(["PENDING", "ACTIVE", "PENDING_APPROVAL"]);
  const live = new Map(); // id -> injection (JSON of faultplane.v1.Injection)
  const list = document.getElementById("experiments");
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

  function card(inj) {
    const request = inj.request || {};
    const services = fp.faults(request).map((f) => f.where).join("; ");
    const ends = fp.seconds(inj.ends_at);
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
        el("dt", { text: "Targets" }), el("dd", { text: `${(inj.targets || []).length} of ${(inj.matched || []).length} matched sidecars` }),
        el("dt", { text: "Fault" }), el("dd", { text: fp.faultText(request, false) }),
        el("dt", { text: "Started" }), el("dd", { text: inj.activated_at ? fp.time(inj.activated_at) : `not yet (created ${fp.time(inj.created_at)})` }),
        el("dt", { text: "Ends" }), el("dd", {}, ends ? `${fp.time(inj.ends_at)} ` : `${request.duration_seconds || 0} s after all targets ACK`,
          ends ? el("span", { class: "countdown", "data-ends": ends }) : null),
        el("dt", { text: "Guard" }), el("dd", { class: "guard" }, guardText(inj))),
      inj.reason ? el("p", { class: "note", text: inj.reason }) : null,
      abort);
  }

  function render() {
    const shown = [...live.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    list.replaceChildren(...shown.map(card));
    if (!shown.length) list.append(el("p", { class: "empty", text: "No experiment is live: any latency you see is not faultplane's." }));
    summary.textContent = `${shown.length} live experiment${shown.length === 1 ? "" : "s"} · updated ${fp.time(new Date().toISOString())}`;
    tickCountdowns();
  }

  function tickCountdowns() {
    const now = Date.now() / 1000;
    for (const node of list.querySelectorAll(".countdown"))
      node.textContent = `(in ${fp.duration(Number(node.dataset.ends) - now)})`;
  }
  setInterval(tickCountdowns, 1000);

  async function abortOne(id) {
    const inj = live.get(id);
    const what = inj ? `${fp.faultText(inj.request || {})} on ${(inj.targets || []).length} sidecars` : id;
    if (!(await fp.confirm(`Abort ${id}?`, `This withdraws ${what}, now.`, `Abort ${id}`))) return;
    const r = await fp.post("/actions/abort", { id });
    fp.showResult(result, `Abort ${id}`, r.ok ? [r.data.injection] : [], r.ok ? "" : `${r.status}: ${r.data.error}`);
  }

  const abortAll = document.getElementById("abort-all");
  if (abortAll) abortAll.addEventListener("click", async () => {
    const names = [...live.keys()];
    const text = `This freezes new injections until unfrozen and withdraws every live experiment: ${names.length ? names.join(", ") : "none is live now"}.`;
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
      fp.banner(data.freeze);
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
    freeze: fp.banner,
  }, (text) => { summary.textContent = text; });
})();
