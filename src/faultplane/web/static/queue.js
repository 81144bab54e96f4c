// The queue page: ListQueue's timeline (what runs, what starts when, what still waits
// and why), redrawn from each `queue` event the stream sends after a change.
"use strict";
(() => {
  const { el } = fp;
  const known = new Map(); // id -> injection (live and queued ones, from the stream)
  let rows = [];
  const body = document.querySelector("#queue tbody");
  const summary = document.getElementById("summary");
  const STATUS = { running: "▶ running", starts: "→ starts", expires: "✖ expires", waits: "… waits" };

  function render() {
    body.replaceChildren(...rows.map((row) => {
      const inj = known.get(row.injection_id) || {};
      return el("tr", { "data-id": row.injection_id, "data-status": row.status },
        el("td", {}, el("a", { href: `/experiments/${row.injection_id}`, text: row.injection_id })),
        el("td", { class: "status", text: STATUS[row.status] || row.status }),
        el("td", { text: row.status === "waits" ? "—" : fp.time(row.start) }),
        el("td", { text: fp.time(row.end) }),
        el("td", { text: inj.owner || "—" }),
        el("td", { text: inj.request ? fp.faultText(inj.request) : "—" }),
        el("td", { text: row.reason || (row.status === "running" ? "" : fp.queueWhen(row)) }));
    }));
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 7, text: "Nothing runs or waits: the queue is empty." })));
    const waiting = rows.filter((r) => r.status !== "running").length;
    summary.textContent = `${rows.length - waiting} running, ${waiting} queued · updated ${fp.time(new Date().toISOString())}`;
  }

  // In effect now (the banner) and beginning within the next hours (the list).
  const ahead = document.getElementById("blackouts-ahead");
  function blackouts(state) {
    fp.blackoutBanner(state);
    const upcoming = (state && state.upcoming) || [];
    ahead.replaceChildren(...upcoming.map((b) => el("li", { "data-blackout": b.id },
      el("strong", { text: b.name }), ` begins ${fp.time(b.starts)}, ends ${fp.time(b.ends)}`)));
    if (!upcoming.length) ahead.append(el("li", { class: "note", text: `None begins in the next ${ahead.dataset.hours} hours.` }));
  }

  fp.stream("/events", {
    snapshot(data) {
      known.clear();
      for (const inj of data.injections) known.set(inj.id, inj);
      rows = data.queue || [];
      fp.banner(data.freeze);
      blackouts(data.blackouts);
      render();
    },
    injection(event) { known.set(event.injection.id, event.injection); },
    queue(data) { rows = data.rows; render(); },
    freeze: fp.banner,
    blackouts,
  }, (text) => { summary.textContent = text; });
})();
