// The schedules page (server-rendered): Pause/Resume/Remove, each confirmed, then the
// page is read again; the event stream keeps the banners current and reloads the page
// when a schedule, a blackout or the policy changes, or one of the schedules' occurrences
// changes state (queued, started, judged): anyone's change, never a poll.
"use strict";
(() => {
  const result = document.getElementById("result");
  const dialog = document.getElementById("confirm");
  const WORDS = {
    pause: (id) => [`Pause ${id}?`, `No new occurrence of ${id} is queued until it is resumed; occurrences already queued or running are not stopped.`],
    resume: (id) => [`Resume ${id}?`, `${id} queues its next occurrence again (missed ones while paused are not run).`],
    remove: (id) => [`Remove ${id}?`, `This deletes schedule ${id}; occurrences already queued stay (abort them to cancel).`],
  };
  let pending = false; // a change arrived while the dialog was open: reload after it
  const reload = () => { if (dialog.open) pending = true; else location.reload(); };
  dialog.addEventListener("close", () => { if (pending) location.reload(); });

  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      const { action, id } = button.dataset;
      const [title, text] = WORDS[action](id);
      const verb = action[0].toUpperCase() + action.slice(1);
      if (!(await fp.confirm(title, text, `${verb} ${id}`))) return;
      button.disabled = true;
      const r = await fp.post("/actions/schedule", { id, action });
      if (r.ok) { location.reload(); return; }
      button.disabled = false;
      result.hidden = false;
      result.replaceChildren(fp.el("h2", { text: `${verb} ${id}` }),
        fp.el("p", { class: "error", role: "alert", text: `✖ ${r.status}: ${r.data.error}` }));
    });
  }

  // An occurrence's id is its schedule's followed by "-" and its time.
  const ids = [...document.querySelectorAll("#schedules tr[data-id]")].map((row) => row.dataset.id + "-");
  fp.stream("/events?only=changes", {
    snapshot(data) { fp.banner(data.freeze); fp.blackoutBanner(data.blackouts); },
    freeze: fp.banner,
    blackouts: fp.blackoutBanner,
    scheduling: reload,
    injection(event) { if (ids.some((prefix) => event.injection.id.startsWith(prefix))) reload(); },
  });
})();
