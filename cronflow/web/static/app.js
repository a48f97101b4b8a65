// cronflow web view: the live parts, fetching only what changes.
// - Elements with data-run whose state is not finished are polled through /api/runs until they
//   finish (their class and text follow).
// - A running try's log (#log[data-live="1"]) is followed from its last offset; when the task
//   instance changes state or try, the page reloads to show it.
"use strict";

(function () {
  const FINISHED = new Set(["success", "failed", "upstream_failed", "skipped"]);
  const meta = document.querySelector('meta[name="state-cells"]');
  const CELLS = meta ? JSON.parse(meta.content) : {};

  function stateOf(el) {
    const m = /(?:^|\s)s-([a-z_]+)/.exec(el.className);
    return m ? m[1] : null;
  }

  function setState(el, state) {
    const old = stateOf(el);
    if (!state || old === state) return;
    el.classList.remove("s-" + old);
    el.classList.add("s-" + state);
    el.textContent = el.dataset.cell ? (CELLS[state] || state) : state;
    if (el.title) el.title = el.title.replace(/[a-z_]+$/, state);
  }

  function followRuns() {
    const els = Array.from(document.querySelectorAll("[data-run]"));
    const pending = new Set(els.filter((el) => !FINISHED.has(stateOf(el))).map((el) => el.dataset.run));
    if (!pending.size) return;
    fetch("/api/runs?ids=" + Array.from(pending).join(","), { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : {}))
      .then((runs) => {
        for (const el of els) {
          const run = runs[el.dataset.run];
          if (!run) continue;
          setState(el, el.dataset.task ? run.tasks[el.dataset.task] : run.state);
        }
      })
      .catch(() => {})
      .finally(() => setTimeout(followRuns, 2000));
  }

  function followLog() {
    const log = document.getElementById("log");
    if (!log || log.dataset.live !== "1") return;
    const decoder = new TextDecoder();
    let offset = Number(log.dataset.offset || 0);
    function poll() {
      fetch(log.dataset.url + "&offset=" + offset, { credentials: "same-origin", cache: "no-store" })
        .then((r) => {
          if (!r.ok) throw new Error(String(r.status));
          offset = Number(r.headers.get("X-Next-Offset") || offset);
          const moved = r.headers.get("X-Try") !== log.dataset.try || r.headers.get("X-State") !== log.dataset.state;
          const done = r.headers.get("X-Done") === "1";
          return r.arrayBuffer().then((buf) => ({ buf, moved, done }));
        })
        .then(({ buf, moved, done }) => {
          if (buf.byteLength) {
            const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
            log.append(decoder.decode(buf, { stream: true }));
            if (atEnd) log.scrollTop = log.scrollHeight;
          }
          if (moved && done) {
            window.location.reload();
            return;
          }
          setTimeout(poll, moved ? 100 : 1000);
        })
        .catch(() => setTimeout(poll, 3000));
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    followRuns();
    followLog();
  });
})();
