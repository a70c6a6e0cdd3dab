/* The dependency graph as a layered DAG in SVG, laid out here (no library):
 *  1. layers: longest path from the sources, over dependency edges (prerequisite -> dependent)
 *     and hierarchy edges (parent -> subtask), so every arrow points right;
 *  2. edges spanning several layers get a dummy point per layer in between;
 *  3. order within layers: barycentric sweeps down and up, keeping the order with the fewest
 *     crossings;
 *  4. vertical positions: each node pulled towards its neighbours, overlaps resolved by merging
 *     blocks (nodes keep their order).
 * Nodes are <g class="node" data-task-id data-status>; dependency edges are
 * <path class="edge-dep" data-from=prerequisite data-to=dependent>; hierarchy edges are
 * <path class="edge-tree" data-parent data-child>. */
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var NODE_W = 184;
  var NODE_H = 46;
  var GAP_X = 72;
  var GAP_Y = 18;
  var DUMMY_H = 10;
  var MARGIN = 20;
  var SWEEPS = 12;

  function layout(nodes, depEdges) {
    var ids = nodes.map(function (n) { return String(n.id); });
    var known = {};
    ids.forEach(function (id, i) { known[id] = i; });

    var edges = []; /* {from, to, kind} */
    depEdges.forEach(function (e) {
      var from = String(e.depends_on_task_id), to = String(e.task_id);
      if (from in known && to in known && from !== to) edges.push({ from: from, to: to, kind: "dep" });
    });
    nodes.forEach(function (n) {
      var parent = n.parent_task_id ? String(n.parent_task_id) : null;
      if (parent && parent in known && parent !== String(n.id)) {
        edges.push({ from: parent, to: String(n.id), kind: "tree" });
      }
    });

    /* 1. longest-path layering (Kahn); anything left in a cycle goes after its placed preds. */
    var succ = {}, pred = {}, indeg = {}, layer = {};
    ids.forEach(function (id) { succ[id] = []; pred[id] = []; indeg[id] = 0; layer[id] = 0; });
    edges.forEach(function (e) { succ[e.from].push(e.to); pred[e.to].push(e.from); indeg[e.to] += 1; });
    var queue = ids.filter(function (id) { return indeg[id] === 0; });
    var done = {}, head = 0;
    while (head < queue.length) {
      var u = queue[head++];
      done[u] = true;
      succ[u].forEach(function (v) {
        layer[v] = Math.max(layer[v], layer[u] + 1);
        if (--indeg[v] === 0) queue.push(v);
      });
    }
    ids.forEach(function (id) {
      if (done[id]) return;
      var l = 0;
      pred[id].forEach(function (p) { if (done[p]) l = Math.max(l, layer[p] + 1); });
      layer[id] = l;
      done[id] = true;
    });

    /* 2. the layered graph: real vertices plus one dummy per layer an edge crosses. */
    var maxLayer = 0;
    ids.forEach(function (id) { maxLayer = Math.max(maxLayer, layer[id]); });
    var vertices = {}; /* key -> {key, layer, dummy, up: [], down: []} */
    var layers = [];
    for (var l = 0; l <= maxLayer; l++) layers.push([]);
    function vertex(key, l, dummy) {
      var v = { key: key, layer: l, dummy: dummy, up: [], down: [], pos: 0, y: 0 };
      vertices[key] = v;
      layers[l].push(v);
      return v;
    }
    ids.forEach(function (id) { vertex(id, layer[id], false); });
    var routes = edges.map(function (e, index) {
      var chain = [vertices[e.from]];
      var a = layer[e.from], b = layer[e.to];
      if (b > a) {
        for (var k = a + 1; k < b; k++) chain.push(vertex("~" + index + ":" + k, k, true));
      }
      chain.push(vertices[e.to]);
      for (var c = 0; c + 1 < chain.length; c++) {
        if (chain[c + 1].layer === chain[c].layer + 1) {
          chain[c].down.push(chain[c + 1]);
          chain[c + 1].up.push(chain[c]);
        }
      }
      return { edge: e, chain: chain };
    });

    /* 3. ordering. Start from a depth-first order so families stay together. */
    var seen = {}, order = 0;
    function visit(v) {
      if (seen[v.key]) return;
      seen[v.key] = true;
      v.pos = order++;
      v.down.forEach(visit);
    }
    layers.forEach(function (vs) { vs.forEach(visit); });
    layers.forEach(sortByPos);

    var segments = 0;
    Object.keys(vertices).forEach(function (k) { segments += vertices[k].down.length; });
    var countCrossingsToo = segments <= 4000;
    var best = snapshot(), bestCrossings = countCrossingsToo ? crossings() : 0;
    for (var sweep = 0; sweep < SWEEPS && (bestCrossings > 0 || !countCrossingsToo); sweep++) {
      var downward = sweep % 2 === 0;
      if (downward) for (var i = 1; i <= maxLayer; i++) reorder(layers[i], "up");
      else for (var j = maxLayer - 1; j >= 0; j--) reorder(layers[j], "down");
      if (!countCrossingsToo) { best = snapshot(); if (sweep >= 3) break; continue; }
      var c = crossings();
      if (c < bestCrossings) { bestCrossings = c; best = snapshot(); }
    }
    restore(best);

    function sortByPos(vs) {
      vs.sort(function (a, b) { return a.pos - b.pos; });
      vs.forEach(function (v, i) { v.pos = i; });
    }
    function reorder(vs, side) {
      vs.forEach(function (v) {
        var ns = v[side];
        if (!ns.length) { v.bary = v.pos; return; }
        var sum = 0;
        ns.forEach(function (n) { sum += n.pos; });
        v.bary = sum / ns.length;
      });
      vs.forEach(function (v, i) { v.tie = i; });
      vs.sort(function (a, b) { return a.bary - b.bary || a.tie - b.tie; });
      vs.forEach(function (v, i) { v.pos = i; });
    }
    function crossings() {
      var total = 0;
      for (var l = 0; l < maxLayer; l++) {
        var segs = [];
        layers[l].forEach(function (v) { v.down.forEach(function (w) { segs.push([v.pos, w.pos]); }); });
        for (var a = 0; a < segs.length; a++) {
          for (var b = a + 1; b < segs.length; b++) {
            if ((segs[a][0] - segs[b][0]) * (segs[a][1] - segs[b][1]) < 0) total++;
          }
        }
      }
      return total;
    }
    function snapshot() { return layers.map(function (vs) { return vs.slice(); }); }
    function restore(saved) {
      saved.forEach(function (vs, l) { layers[l] = vs; vs.forEach(function (v, i) { v.pos = i; }); });
    }

    /* 4. vertical placement. */
    function size(v) { return (v.dummy ? DUMMY_H : NODE_H) + GAP_Y; }
    function height(v) { return v.dummy ? DUMMY_H : NODE_H; }
    layers.forEach(function (vs) {
      var y = 0;
      vs.forEach(function (v) { v.y = y; y += size(v); });
    });
    function place(vs, side) {
      /* desired centre: mean centre of the neighbours on that side (else where it is) */
      var desired = vs.map(function (v) {
        var ns = v[side].length ? v[side] : v[side === "up" ? "down" : "up"];
        if (!ns.length) return v.y + height(v) / 2;
        var sum = 0;
        ns.forEach(function (n) { sum += n.y + height(n) / 2; });
        return sum / ns.length;
      });
      var blocks = [];
      vs.forEach(function (v, i) {
        var block = { first: i, last: i, sum: desired[i] - height(v) / 2, count: 1, span: size(v) };
        block.top = block.sum;
        while (blocks.length) {
          var prev = blocks[blocks.length - 1];
          if (prev.top + prev.span <= block.top) break;
          blocks.pop();
          /* merged: each member's wish expressed as a wish for the block's top */
          block = {
            first: prev.first, last: block.last,
            sum: prev.sum + block.sum - block.count * prev.span,
            count: prev.count + block.count,
            span: prev.span + block.span
          };
          block.top = block.sum / block.count;
        }
        blocks.push(block);
      });
      blocks.forEach(function (block) {
        var y = block.top;
        for (var k = block.first; k <= block.last; k++) { vs[k].y = y; y += size(vs[k]); }
      });
    }
    for (var round = 0; round < 6; round++) {
      for (var d = 1; d <= maxLayer; d++) place(layers[d], "up");
      for (var u2 = maxLayer - 1; u2 >= 0; u2--) place(layers[u2], "down");
    }
    var minY = Infinity, maxY = -Infinity;
    layers.forEach(function (vs) {
      vs.forEach(function (v) { minY = Math.min(minY, v.y); maxY = Math.max(maxY, v.y + height(v)); });
    });
    if (minY === Infinity) { minY = 0; maxY = 0; }
    var positions = {};
    Object.keys(vertices).forEach(function (key) {
      var v = vertices[key];
      v.x = MARGIN + v.layer * (NODE_W + GAP_X);
      v.y = MARGIN + v.y - minY;
      if (!v.dummy) positions[key] = { x: v.x, y: v.y, layer: v.layer };
    });

    return {
      positions: positions,
      routes: routes.map(function (r) {
        return { from: r.edge.from, to: r.edge.to, kind: r.edge.kind, d: pathOf(r.chain) };
      }),
      width: 2 * MARGIN + (maxLayer + 1) * NODE_W + maxLayer * GAP_X,
      height: Math.max(2 * MARGIN + (maxY - minY), 80),
      layers: maxLayer + 1
    };
  }

  function pathOf(chain) {
    var pts = [];
    chain.forEach(function (v, i) {
      var cy = v.y + (v.dummy ? DUMMY_H : NODE_H) / 2;
      if (i === 0) pts.push([v.x + NODE_W, cy]);
      else if (i === chain.length - 1) pts.push([v.x - 2, cy]);
      else { pts.push([v.x, cy]); pts.push([v.x + NODE_W, cy]); }
    });
    var d = "M" + r(pts[0][0]) + "," + r(pts[0][1]);
    for (var i = 1; i < pts.length; i++) {
      var a = pts[i - 1], b = pts[i];
      if (a[1] === b[1] || b[0] - a[0] === NODE_W) {
        d += " L" + r(b[0]) + "," + r(b[1]);
      } else {
        var mx = (a[0] + b[0]) / 2;
        d += " C" + r(mx) + "," + r(a[1]) + " " + r(mx) + "," + r(b[1]) + " " + r(b[0]) + "," + r(b[1]);
      }
    }
    return d;
  }
  function r(n) { return Math.round(n * 10) / 10; }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }

  function truncate(text, max) {
    text = String(text || "");
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  /* Draw the graph into <svg>. nodes: [{id, title, status, parent_task_id}];
   * describe(node) -> second line under the title (status, assignee). */
  function render(root, nodes, depEdges, opts) {
    opts = opts || {};
    while (root.firstChild) root.removeChild(root.firstChild);
    var lay = layout(nodes, depEdges);
    root.setAttribute("width", lay.width);
    root.setAttribute("height", lay.height);
    root.setAttribute("viewBox", "0 0 " + lay.width + " " + lay.height);
    root.dataset.layers = String(lay.layers);

    var defs = svg("defs");
    var marker = svg("marker", { id: "dag-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrowhead" }));
    defs.appendChild(marker);
    root.appendChild(defs);

    if (!nodes.length) {
      var empty = svg("text", { x: 20, y: 40, "class": "empty" });
      empty.textContent = "No tasks yet.";
      root.appendChild(empty);
      return lay;
    }

    var edgeLayer = svg("g", { "class": "edges" });
    lay.routes.forEach(function (route) {
      if (route.kind === "tree") {
        edgeLayer.appendChild(svg("path", { d: route.d, "class": "edge-tree",
          "data-parent": route.from, "data-child": route.to }));
      }
    });
    lay.routes.forEach(function (route) {
      if (route.kind === "dep") {
        var p = svg("path", { d: route.d, "class": "edge-dep", "data-from": route.from,
          "data-to": route.to, "marker-end": "url(#dag-arrow)" });
        edgeLayer.appendChild(p);
      }
    });
    root.appendChild(edgeLayer);

    var parents = {};
    nodes.forEach(function (n) { if (n.parent_task_id) parents[String(n.parent_task_id)] = true; });
    var nodeLayer = svg("g", { "class": "nodes" });
    nodes.forEach(function (n) {
      var id = String(n.id);
      var pos = lay.positions[id];
      var g = svg("g", { "class": "node status-" + n.status + (parents[id] ? " summary" : ""),
        "data-task-id": id, "data-status": n.status,
        transform: "translate(" + r(pos.x) + "," + r(pos.y) + ")", tabindex: 0 });
      var tip = svg("title");
      tip.textContent = n.title + " (" + n.status.replace(/_/g, " ") + ")";
      g.appendChild(tip);
      g.appendChild(svg("rect", { width: NODE_W, height: NODE_H, rx: 7, ry: 7 }));
      var title = svg("text", { x: 10, y: 19, "class": "title" });
      title.textContent = truncate(n.title, 26);
      g.appendChild(title);
      var sub = svg("text", { x: 10, y: 36, "class": "sub" });
      sub.textContent = opts.describe ? opts.describe(n) : n.status;
      g.appendChild(sub);
      if (opts.onSelect) {
        g.addEventListener("click", function () { opts.onSelect(id); });
        g.addEventListener("keydown", function (ev) { if (ev.key === "Enter") opts.onSelect(id); });
      }
      nodeLayer.appendChild(g);
    });
    root.appendChild(nodeLayer);
    return lay;
  }

  /* Recolour one node in place. */
  function setStatus(root, id, status, subText, title) {
    var g = root.querySelector('g.node[data-task-id="' + String(id) + '"]');
    if (!g) return false;
    var summary = g.classList.contains("summary");
    var selected = g.classList.contains("selected");
    g.setAttribute("class", "node status-" + status + (summary ? " summary" : "") +
      (selected ? " selected" : ""));
    g.setAttribute("data-status", status);
    var sub = g.querySelector("text.sub");
    if (sub && subText !== undefined) sub.textContent = subText;
    var tip = g.querySelector("title");
    if (tip && title) tip.textContent = title + " (" + status.replace(/_/g, " ") + ")";
    return true;
  }

  window.Orch = window.Orch || {};
  window.Orch.dag = { layout: layout, render: render, setStatus: setStatus };
})();
