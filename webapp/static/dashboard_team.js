/* /dashboard/teams/<id>: header with pause/resume, dependency graph, task tree, workers,
 * assignment log; live over the team's event stream. Events update the task's node, badge and
 * row at once; a debounced refetch then brings counts, workers and the log up to date. */
(function () {
  "use strict";
  var O = window.Orch;
  var el = O.el;
  var teamId = document.body.dataset.teamId;
  var base = "/teams/" + encodeURIComponent(teamId);

  /* The status an event puts its task in (others are picked up by the refetch). */
  var STATUS_BY_EVENT = {
    "task.blocked": "blocked",
    "task.unblocked": "pending",
    "task.assigned": "assigned",
    "task.started": "in_progress",
    "task.review": "review",
    "task.completed": "completed",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
    "task.retrying": "pending"
  };

  var state = {
    team: null,
    tasks: {},       /* id -> task */
    order: [],       /* task ids, as listed by the API */
    members: {},     /* id -> member */
    graph: { nodes: [], edges: [] },
    graphKey: null,
    treeKey: null,
    collapsed: {},
    selected: null,
    eventSeq: 0
  };

  /* --- header ------------------------------------------------------------------------------ */

  function renderTeam(team) {
    state.team = team;
    document.title = team.name + " · Agent orchestration";
    document.getElementById("team-name").textContent = team.name;
    document.getElementById("crumb-team").textContent = team.name;
    O.setBadge(document.getElementById("team-status"), team.status);
    var reason = document.getElementById("team-reason");
    reason.textContent = team.status_reason || "";
    reason.hidden = !team.status_reason;
    document.getElementById("btn-start").hidden = team.status !== "inactive";
    document.getElementById("btn-pause").hidden = team.status !== "active";
    document.getElementById("btn-resume").hidden = team.status !== "paused";

    var counts = document.getElementById("team-counts");
    O.clear(counts);
    var total = taskTotal(team);
    O.TASK_STATUSES.forEach(function (s) {
      var n = (team.task_counts || {})[s] || 0;
      var chip = O.badge(s);
      chip.dataset.count = String(n);
      chip.appendChild(el("b", { text: String(n) }));
      counts.appendChild(chip);
    });
    counts.insertBefore(el("span", { class: "badge", dataset: { count: String(total) } },
      "tasks", el("b", { text: String(total) })), counts.firstChild);

    var meta = [];
    if (team.description) meta.push(team.description);
    meta.push("budget: " + (team.token_budget === null ? "none" : O.fmtInt(team.token_budget) + " tokens"));
    if (team.started_at) meta.push("started " + O.fmtTime(team.started_at));
    if (team.paused_at && team.status === "paused") meta.push("paused " + O.fmtTime(team.paused_at));
    document.getElementById("team-meta").textContent = meta.join(" · ");
  }

  function taskTotal(team) {
    return O.TASK_STATUSES.reduce(function (sum, s) { return sum + ((team.task_counts || {})[s] || 0); }, 0);
  }

  function teamAction(action) {
    var buttons = document.querySelectorAll(".team-actions button");
    buttons.forEach(function (b) { b.disabled = true; });
    O.api("POST", base + "/" + action).then(renderTeam, function (err) {
      if (err.status !== 401) O.banner("Could not " + action + ": " + err.message);
    }).then(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  }

  /* --- tasks: graph and tree ---------------------------------------------------------------- */

  function agentOf(task) {
    var m = task && task.assigned_to ? state.members[task.assigned_to] : null;
    return m ? m.agent_id : (task && task.assigned_to ? "member " + task.assigned_to.slice(0, 8) : "");
  }

  function describe(task) {
    var text = task.status.replace(/_/g, " ");
    var agent = agentOf(task);
    return agent ? text + " · " + agent : text;
  }

  function renderGraph() {
    var nodes = state.graph.nodes.map(function (n) {
      var t = state.tasks[n.id];
      return t ? { id: n.id, title: t.title, status: t.status, parent_task_id: t.parent_task_id } : n;
    });
    var svg = document.getElementById("dag");
    O.dag.render(svg, nodes, state.graph.edges, {
      describe: function (n) { return describe(state.tasks[n.id] || n); },
      onSelect: function (id) { select(id, "tree"); }
    });
    svg.dataset.nodes = String(nodes.length);
    svg.dataset.edges = String(state.graph.edges.length);
    if (state.selected) markSelected(state.selected);
  }

  function graphKey(graph) {
    var parts = graph.nodes.map(function (n) { return n.id + "<" + (n.parent_task_id || ""); }).sort();
    var edges = graph.edges.map(function (e) { return e.depends_on_task_id + ">" + e.task_id; }).sort();
    return parts.join(",") + "|" + edges.join(",");
  }

  function renderTree() {
    var root = document.getElementById("task-tree");
    O.clear(root);
    var children = {};
    var roots = [];
    state.order.forEach(function (id) {
      var t = state.tasks[id];
      if (t.parent_task_id && state.tasks[t.parent_task_id]) {
        (children[t.parent_task_id] = children[t.parent_task_id] || []).push(id);
      } else {
        roots.push(id);
      }
    });
    document.getElementById("tree-empty").hidden = roots.length > 0;
    function branch(ids) {
      var ul = el("ul");
      ids.forEach(function (id) { ul.appendChild(item(id)); });
      return ul;
    }
    function item(id) {
      var t = state.tasks[id];
      var kids = children[id] || [];
      var li = el("li", { class: state.collapsed[id] ? "collapsed" : null, dataset: { taskId: id } });
      var toggle = el("button", { type: "button", class: "toggle" + (kids.length ? "" : " leaf"),
        "aria-label": "collapse or expand", text: state.collapsed[id] ? "▸" : "▾" });
      toggle.addEventListener("click", function () {
        state.collapsed[id] = !state.collapsed[id];
        li.classList.toggle("collapsed", !!state.collapsed[id]);
        toggle.textContent = state.collapsed[id] ? "▸" : "▾";
      });
      var title = el("span", { class: "title", title: t.description || t.title, text: t.title });
      title.addEventListener("click", function () { select(id, "graph"); });
      var row = el("div", { class: "row" }, toggle, O.badge(t.status),
        title, el("span", { class: "assignee", text: agentOf(t) }));
      if (kids.length) row.appendChild(el("span", { class: "muted small", text: kids.length + " subtasks" }));
      li.appendChild(row);
      if (kids.length) li.appendChild(branch(kids));
      return li;
    }
    root.appendChild(branch(roots));
    if (state.selected) markSelected(state.selected);
  }

  function treeKey() {
    return state.order.map(function (id) { return id + "<" + (state.tasks[id].parent_task_id || ""); }).join(",");
  }

  /* One task's status everywhere, in place. */
  function applyTask(task, flashIt) {
    var id = task.id;
    var svg = document.getElementById("dag");
    O.dag.setStatus(svg, id, task.status, describe(task), task.title);
    var li = document.querySelector('#task-tree li[data-task-id="' + id + '"]');
    if (li) {
      var badge = li.querySelector(":scope > .row > .badge");
      var changed = badge && badge.dataset.status !== task.status;
      O.setBadge(badge, task.status);
      if (changed && flashIt) O.flash(badge);
      var assignee = li.querySelector(":scope > .row > .assignee");
      if (assignee) assignee.textContent = agentOf(task);
    }
  }

  function select(id, scrollTo) {
    state.selected = id;
    markSelected(id);
    var target = scrollTo === "tree"
      ? document.querySelector('#task-tree li[data-task-id="' + id + '"] > .row')
      : document.querySelector('#dag g.node[data-task-id="' + id + '"]');
    if (target && target.scrollIntoView) target.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function markSelected(id) {
    document.querySelectorAll("#dag g.node.selected, #task-tree .row.selected").forEach(function (n) {
      n.classList.remove("selected");
    });
    var node = document.querySelector('#dag g.node[data-task-id="' + id + '"]');
    if (node) node.classList.add("selected");
    var row = document.querySelector('#task-tree li[data-task-id="' + id + '"] > .row');
    if (row) row.classList.add("selected");
  }

  /* --- workers and assignments -------------------------------------------------------------- */

  function renderMembers(list) {
    state.members = {};
    list.forEach(function (m) { state.members[m.id] = m; });
    list = list.slice().sort(function (a, b) {
      return (a.role === b.role ? 0 : a.role === "manager" ? -1 : 1) || a.agent_id.localeCompare(b.agent_id);
    });
    var body = document.getElementById("workers-body");
    O.clear(body);
    document.getElementById("workers-empty").hidden = list.length > 0;
    list.forEach(function (m) {
      var max = m.max_concurrent_tasks || 0;
      var load = m.current_workload || 0;
      var bar = el("div", { class: "loadbar" + (max && load >= max ? " full" : ""),
        title: load + " of " + max + " concurrent tasks" }, el("div", { class: "fill" }),
        el("span", { class: "label", text: load + "/" + max }));
      bar.firstChild.style.width = (max ? Math.min(100, 100 * load / max) : 0) + "%";
      var finished = m.tasks_completed + m.tasks_failed;
      var agent = el("td", null, el("b", { text: m.agent_id }), " ",
        el("span", { class: "muted small", text: m.role + (m.status !== "idle" ? " · " + m.status : "") }));
      body.appendChild(el("tr", { dataset: { memberId: m.id } },
        agent,
        el("td", { text: m.specialization || "Generalist" }),
        el("td", null, bar),
        el("td", { class: "num", text: finished ? (100 * m.tasks_completed / finished).toFixed(1) + "%" : "—" }),
        el("td", { class: "num", text: m.tasks_completed + " / " + m.tasks_failed }),
        el("td", { class: "num", text: O.fmtInt(m.total_tokens_used) }),
        el("td", { class: "num", text: "$" + Number(m.total_cost || 0).toFixed(4) })));
    });
  }

  function pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(0) + "%"; }

  function renderAssignments(list) {
    var root = document.getElementById("assignments");
    O.clear(root);
    document.getElementById("assignments-empty").hidden = list.length > 0;
    list.forEach(function (a) {
      var task = a.task_id ? state.tasks[a.task_id] : null;
      var worker = a.worker_id ? state.members[a.worker_id] : null;
      var taskLink = el("a", { href: "#", text: task ? task.title : (a.task_id || "deleted task") });
      taskLink.addEventListener("click", function (ev) {
        ev.preventDefault();
        if (a.task_id) select(a.task_id, "graph");
      });
      var line = el("div", { class: "line" },
        el("span", { class: "muted small", text: O.fmtTime(a.created_at) }),
        taskLink, "→", el("b", { text: worker ? worker.agent_id : (a.worker_id || "—") }),
        el("span", { class: "muted small", text: "score " + (a.score === null ? "—" : Number(a.score).toFixed(3)) }));
      if (a.breakdown) {
        line.appendChild(el("span", { class: "muted small", text: "skill " + pct(a.breakdown.skill) +
          " · workload " + pct(a.breakdown.workload) + " · success " + pct(a.breakdown.success_rate) }));
      }
      root.appendChild(el("li", { dataset: { taskId: a.task_id || "" } }, line,
        el("pre", { class: "explanation", text: a.explanation })));
    });
  }

  /* The newest background decompositions (POST .../decompositions); the card shows only once
     the team has one. */
  function renderDecompositions(list) {
    var body = document.getElementById("decompositions-body");
    O.clear(body);
    document.getElementById("decompositions-card").hidden = list.length === 0;
    list.forEach(function (d) {
      body.appendChild(el("tr", { dataset: { decompositionId: d.id } },
        el("td", { text: d.goal, title: d.id }),
        el("td", {}, O.badge(d.status, d.status)),
        el("td", { class: "num", text: String(d.attempts) }),
        el("td", { class: "num", text: d.task_ids ? String(d.task_ids.length) : "—" }),
        el("td", { class: "muted small", text: O.fmtTime(d.created_at) }),
        el("td", { class: "small", text: d.error || "" })));
    });
  }

  /* --- loading ------------------------------------------------------------------------------ */

  var loading = null;
  var again = false;

  /* A team larger than this (data-graph-limit: ORCH_DASHBOARD_GRAPH_LIMIT) is
   * not drawn, and its tree lists that many tasks, the first by priority: the whole of a large
   * team would be tens of megabytes a refresh and a layout no browser finishes. */
  var graphLimit = Number(document.body.dataset.graphLimit) || 1000;

  function showScale(total, whole) {
    document.getElementById("graph-wrap").hidden = !whole;
    var large = document.getElementById("graph-too-large");
    large.hidden = whole;
    large.textContent = whole ? "" : "This team has " + O.fmtInt(total) + " tasks: the graph is " +
      "drawn for teams of up to " + O.fmtInt(graphLimit) + ".";
    var partial = document.getElementById("tree-partial");
    partial.hidden = whole;
    partial.textContent = whole ? "" : "The first " + O.fmtInt(graphLimit) + " of " +
      O.fmtInt(total) + " tasks, highest priority first.";
  }

  function refresh() {
    if (loading) { again = true; return loading; }
    var seq = state.eventSeq;
    var total = 0, whole = true;
    loading = O.api("GET", base).then(function (team) {
      total = taskTotal(team);
      whole = total <= graphLimit;
      return Promise.all([
        team,
        O.api("GET", base + "/tasks" + (whole ? "" : "?limit=" + graphLimit)),
        O.api("GET", base + "/members"),
        whole ? O.api("GET", base + "/dependency-graph") : { nodes: [], edges: [] },
        O.api("GET", base + "/assignments?limit=100"),
        O.api("GET", base + "/decompositions?limit=20")
      ]);
    }).then(function (r) {
      var team = r[0], tasks = r[1], members = r[2], graph = r[3], assignments = r[4];
      var decompositions = r[5];
      showScale(total, whole);
      var stale = seq !== state.eventSeq; /* an event came in meanwhile: its refetch follows */
      renderTeam(team);
      renderMembers(members);
      var previous = state.tasks;
      state.tasks = {};
      state.order = [];
      tasks.forEach(function (t) {
        var known = previous[t.id];
        if (stale && known) t = Object.assign({}, t, { status: known.status });
        state.tasks[t.id] = t;
        state.order.push(t.id);
      });
      state.graph = graph;
      var gk = graphKey(graph);
      if (gk !== state.graphKey) { state.graphKey = gk; renderGraph(); }
      var tk = treeKey();
      if (tk !== state.treeKey) { state.treeKey = tk; renderTree(); }
      state.order.forEach(function (id) { applyTask(state.tasks[id], true); });
      renderAssignments(assignments);
      renderDecompositions(decompositions);
      document.getElementById("content").dataset.loaded = "true";
    }).catch(function (err) {
      if (err && err.status === 404) O.banner("This team does not exist, or the token cannot see it.");
      else if (err && err.status !== 401) O.banner("Could not load the team: " + (err.message || err));
    }).then(function () {
      loading = null;
      if (again) { again = false; refreshSoon(); }
    });
    return loading;
  }

  // 400 ms after events stop, and at least every 2 s while they keep coming.
  var refreshSoon = O.debounce(refresh, 400, 2000);

  function onEvent(ev) {
    state.eventSeq += 1;
    var kind = ev.event || "";
    if (kind === "reset") { refresh(); return; } /* events were trimmed unseen: reload it all */
    var data = ev.data || {};
    var taskId = data.task_id;
    var status = STATUS_BY_EVENT[kind] || (kind === "task.created" ? data.status : null);
    if (taskId && status && state.tasks[taskId]) {
      var task = Object.assign({}, state.tasks[taskId], { status: status });
      if (kind === "task.assigned" && data.worker_id) task.assigned_to = data.worker_id;
      state.tasks[taskId] = task;
      applyTask(task, true);
    }
    if (kind.indexOf("team.") === 0 && data.status && state.team) {
      renderTeam(Object.assign({}, state.team, { status: data.status }));
    }
    refreshSoon();
  }

  O.start(function () {
    document.getElementById("btn-start").addEventListener("click", function () { teamAction("start"); });
    document.getElementById("btn-pause").addEventListener("click", function () { teamAction("pause"); });
    document.getElementById("btn-resume").addEventListener("click", function () { teamAction("resume"); });
    document.getElementById("tree-expand").addEventListener("click", function () {
      state.collapsed = {};
      renderTree();
    });
    document.getElementById("tree-collapse").addEventListener("click", function () {
      state.order.forEach(function (id) { state.collapsed[id] = true; });
      renderTree();
    });
    var legend = document.getElementById("legend");
    O.TASK_STATUSES.forEach(function (s) {
      legend.appendChild(el("li", { dataset: { status: s } }, el("span", { class: "swatch status-" + s }),
        s.replace(/_/g, " ")));
    });
    legend.appendChild(el("li", null, el("span", { class: "swatch" }), "dashed border: summary task"));

    var opened = 0;
    O.streamEvents(teamId, {
      onEvent: onEvent,
      onState: O.setLive,
      onOpen: function () { if (opened++ > 0) refreshSoon(); }
    });
    refresh();
  });
})();
