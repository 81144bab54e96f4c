// One experiment: its facts, the SLO timeline (readings, min, breach spans, the control
// group in compare mode), its transitions with each sidecar's answer, kept live.
"use strict";
(() => {
  const { el } = fp;
  const id = document.getElementById("experiment").dataset.id;
  const LIVE = new Set(["PENDING", "ACTIVE", "PENDING_APPROVAL", "QUEUED"]);
  let injection = null;
  let readings = [];
  let plot = null;
  const result = document.getElementById("result");

  function facts(inj) {
    const request = inj.request || {};
    const steady = request.steady_state || {};
    const rows = [
      ["Owner", inj.owner || "—"], ["Hypothesis", request.hypothesis || "—"],
      ["Fault", fp.faultText(request)],
      ["Targets", `${(inj.targets || []).length} of ${(inj.matched || []).length} matched: ${(inj.targets || []).join(", ")}`],
      ["Duration", `${request.duration_seconds || 0} s`], ["Created", fp.time(inj.created_at)],
      ["Started", fp.time(inj.activated_at)], ["Scheduled end", fp.time(inj.ends_at)], ["Ended", fp.time(inj.ended_at)],
      ["Steady state", steady.slo ? `${steady.slo} ≥ ${steady.min !== undefined ? steady.min : "baseline"}, abort after ${steady.abort_after || 0} s${steady.compare ? ", compare " + steady.compare : ""}` : "none"],
    ];
    if (inj.approved_by) rows.push(["Approved by", inj.approved_by]);
    if (inj.state === "QUEUED") rows.push(["Waits for", inj.waiting_reason || inj.reason || "—"]);
    document.getElementById("facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function header(inj) {
    const state = document.getElementById("state");
    state.textContent = inj.state;
    state.dataset.state = inj.state;
    document.getElementById("reason").textContent = inj.reason || "";
    document.getElementById("verdict").textContent = inj.verdict || "not yet: the experiment has not ended";
    const slot = document.getElementById("abort-slot");
    slot.replaceChildren();
    if (fp.mayStop && LIVE.has(inj.state))
      slot.append(el("button", { type: "button", class: "danger", id: "abort", onclick: abort }, `Abort ${inj.id}`));
  }

  function transitions(inj) {
    const rows = (inj.transitions || []).map((t) => el("div", { class: "transition" },
      el("h3", {}, `${t.from_state || "—"} → `, el("span", { class: "state", "data-state": t.to_state, text: t.to_state }),
        ` at ${fp.time(t.at)}`),
      el("p", { class: "note", text: t.reason || "" }),
      (t.evidence || []).length ? fp.evidenceList(t.evidence, "transition") : null));
    document.getElementById("transitions").replaceChildren(...rows);
  }

  function guardLine() {
    const steady = ((injection || {}).request || {}).steady_state || {};
    const r = readings[readings.length - 1];
    const node = document.getElementById("guard");
    if (!steady.slo) { node.textContent = "No steady state: nothing is guarded."; return; }
    node.textContent = r ? `Last reading ${r.value !== undefined ? Number(r.value).toFixed(4) : "unreadable"} at ${fp.time(r.at)}`
      + ` (min ${steady.min !== undefined ? steady.min : "baseline"}); ${r.breach ? `✖ BREACH for ${Number(r.breach_seconds || 0).toFixed(1)} s of ${steady.abort_after || 0} s` : "✔ within"}`
      + ` · ${readings.length} readings` : "No reading yet.";
  }

  function chartData() {
    const steady = ((injection || {}).request || {}).steady_state || {};
    const xs = readings.map((r) => fp.seconds(r.at));
    const value = readings.map((r) => (r.value !== undefined ? r.value : null));
    const min = readings.map(() => (steady.min !== undefined ? steady.min : null));
    const control = readings.map((r) => (r.control_value !== undefined ? r.control_value : null));
    return [xs, value, min, control];
  }

  // Breach spans: a shaded band behind every run of breaching readings.
  function drawBreaches(u) {
    const ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
    ctx.save();
    ctx.fillStyle = "rgba(180, 35, 24, 0.15)";
    let start = null;
    readings.forEach((r, i) => {
      const x = u.valToPos(fp.seconds(r.at), "x", true);
      if (r.breach && start === null) start = x;
      const last = i === readings.length - 1;
      if (start !== null && (!r.breach || last)) { ctx.fillRect(start, top, Math.max(2, x - start), height); start = null; }
    });
    ctx.restore();
  }

  function chart() {
    const node = document.getElementById("chart");
    const data = chartData();
    const width = Math.max(280, node.clientWidth || 600);
    if (!plot) {
      plot = new uPlot({
        width, height: 260,
        series: [{}, { label: "reading", stroke: "#0b5cad", width: 2, points: { show: true, size: 4 } },
          { label: "min", stroke: "#b42318", dash: [6, 4], width: 1, points: { show: false } },
          { label: "control group", stroke: "#5b6672", dash: [2, 3], width: 2, points: { show: false } }],
        axes: [{ space: 90, values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(11, 19)) },
          { label: "SLO value" }],
        hooks: { drawClear: [drawBreaches] },
      }, data, node);
      window.addEventListener("resize", () => plot.setSize({ width: Math.max(280, node.clientWidth), height: 260 }));
    } else plot.setData(data);
    node.dataset.points = String(readings.length);
    document.getElementById("chart-legend").textContent =
      "Time in UTC. Solid blue line with dots: the faulted sidecars' SLO value; red long dashes: the steady state's min; grey dotted: the unfaulted control group (compare mode); shaded band: breach (the line above says how long).";
    guardLine();
  }

  function show(inj) {
    injection = inj;
    if (inj.readings && inj.readings.length >= readings.length) readings = inj.readings;
    facts(inj); header(inj); transitions(inj); chart();
  }

  async function abort() {
    const what = `${fp.faultText(injection.request || {})} on ${(injection.targets || []).length} sidecars`;
    if (!(await fp.confirm(`Abort ${id}?`, `This withdraws ${what}, now.`, `Abort ${id}`))) return;
    const button = document.getElementById("abort");
    if (button) button.disabled = true;
    const r = await fp.post("/actions/abort", { id });
    fp.showResult(result, `Abort ${id}`, r.ok ? [r.data.injection] : [], r.ok ? "" : `${r.status}: ${r.data.error}`);
    if (r.ok) show(r.data.injection);
    else if (button) button.disabled = false;
  }

  fp.stream(`/events?id=${encodeURIComponent(id)}`, {
    snapshot(data) { readings = []; if (data.injections[0]) show(data.injections[0]); fp.banner(data.freeze); fp.blackoutBanner(data.blackouts); },
    injection(event) { show(event.injection); },
    readings(data) { if (data.id === id) { readings = readings.concat(data.readings); chart(); } },
    freeze: fp.banner,
    blackouts: fp.blackoutBanner,
  });
})();
