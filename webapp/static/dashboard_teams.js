/* /dashboard: every team the token reaches, with status and task counts (refreshed every 10 s). */
(function () {
  "use strict";
  var O = window.Orch;
  var el = O.el;

  function progress(counts, total) {
    var bar = el("div", { class: "progress", title: O.TASK_STATUSES.map(function (s) {
      return s.replace(/_/g, " ") + ": " + (counts[s] || 0);
    }).join(", ") });
    if (!total) return bar;
    O.TASK_STATUSES.forEach(function (s) {
      if (!counts[s]) return;
      var part = el("span", { class: "status-" + s });
      part.style.width = (100 * counts[s] / total) + "%";
      bar.appendChild(part);
    });
    return bar;
  }

  function summary(counts) {
    var parts = [];
    O.TASK_STATUSES.forEach(function (s) {
      if (counts[s]) parts.push(counts[s] + " " + s.replace(/_/g, " "));
    });
    return parts.join(" · ") || "no tasks";
  }

  function render(teams) {
    var body = document.getElementById("teams-body");
    O.clear(body);
    document.getElementById("teams-empty").hidden = teams.length > 0;
    teams.forEach(function (team) {
      var counts = team.task_counts || {};
      var total = O.TASK_STATUSES.reduce(function (n, s) { return n + (counts[s] || 0); }, 0);
      var status = el("td", null, O.badge(team.status));
      if (team.status_reason) status.appendChild(el("div", { class: "muted small", text: team.status_reason }));
      body.appendChild(el("tr", { dataset: { teamId: team.id } },
        el("td", null, el("a", { href: "/dashboard/teams/" + encodeURIComponent(team.id), text: team.name }),
          team.description ? el("div", { class: "muted small", text: team.description }) : null),
        status,
        el("td", { class: "task-summary" }, el("b", { text: String(total) }), " ",
          el("span", { class: "muted small", text: summary(counts) })),
        el("td", null, progress(counts, total)),
        el("td", { class: "num", text: team.token_budget === null ? "—" : O.fmtInt(team.token_budget) }),
        el("td", { class: "muted small", text: O.fmtTime(team.created_at) })));
    });
    document.getElementById("teams-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function load() {
    return O.api("GET", "/teams").then(render, function (err) {
      if (err && err.status !== 401) O.banner("Could not load teams: " + err.message);
    });
  }

  O.start(function () {
    load();
    window.setInterval(load, 10000);
  });
})();
