/* Shared dashboard code: the token, the JSON API, the event stream, small DOM helpers.
 * The token lives in sessionStorage (this tab only) and travels in the Authorization header;
 * it is never put in a URL and never logged. */
(function () {
  "use strict";

  var TOKEN_KEY = "orch.dashboard.token";
  var API = "/api/v1";
  var TASK_STATUSES = ["pending", "blocked", "assigned", "in_progress", "review", "completed",
    "failed", "cancelled"];

  function getToken() {
    try { return window.sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function setToken(token) { window.sessionStorage.setItem(TOKEN_KEY, token); }
  function clearToken() { window.sessionStorage.removeItem(TOKEN_KEY); }

  function ApiError(status, body) {
    this.status = status;
    this.body = body;
    this.message = (body && body.message) || ("HTTP " + status);
  }
  ApiError.prototype = Object.create(Error.prototype);

  /* A JSON API call with the bearer token; a 401 asks for the token again. */
  function api(method, path, body) {
    var token = getToken();
    var init = { method: method, headers: { "Accept": "application/json" }, cache: "no-store",
      credentials: "omit", referrerPolicy: "no-referrer" };
    if (token) init.headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (response) {
      if (response.status === 204) return null;
      return response.json().catch(function () { return null; }).then(function (data) {
        if (!response.ok) {
          if (response.status === 401) needToken("That token was refused: " +
            ((data && data.message) || "401 Unauthorized"));
          throw new ApiError(response.status, data);
        }
        return data;
      });
    });
  }

  /* --- the sign-in form -------------------------------------------------------------------- */

  var started = false;
  var startPage = null;

  function needToken(message) {
    clearToken();
    document.getElementById("content").hidden = true;
    document.getElementById("login").hidden = false;
    document.getElementById("forget-token").hidden = true;
    var error = document.getElementById("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    document.getElementById("token-input").focus();
    stopAllStreams();
  }

  function showContent() {
    document.getElementById("login").hidden = true;
    document.getElementById("content").hidden = false;
    document.getElementById("forget-token").hidden = false;
  }

  /* Pages call Orch.start(fn): fn runs once a token is known (now, or after the form). */
  function start(fn) {
    startPage = fn;
    var form = document.getElementById("token-form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("token-input");
      var token = input.value.trim();
      input.value = "";
      if (!token) return;
      setToken(token);
      // Check it before showing anything: GET /teams answers 401 to a bad token.
      api("GET", "/teams").then(function () { run(); }, function (err) {
        if (err && err.status !== 401) needToken("The API answered: " + err.message);
      });
    });
    document.getElementById("forget-token").addEventListener("click", function () {
      needToken("");
    });
    if (getToken()) run(); else needToken("");
  }

  function run() {
    showContent();
    if (started) { window.location.reload(); return; }
    started = true;
    startPage();
  }

  /* --- the event stream -------------------------------------------------------------------- */

  var streams = [];

  function stopAllStreams() {
    streams.forEach(function (s) { s.stop(); });
    streams = [];
  }

  /* Follow GET /api/v1/teams/{id}/events with fetch() (EventSource cannot send the token):
   * parse `id:`/`event:`/`data:` lines, dispatch on blank lines, reconnect with Last-Event-ID
   * (the server ends a stream after a while, and answers 503 with Retry-After when busy).
   * handlers: onEvent({id, event, data}) (event "reset": events were missed, refetch the
   * state), onState("connecting"|"connected"|"offline"). */
  function streamEvents(teamId, handlers) {
    var lastEventId = null;
    var retryMs = 3000;
    var delayMs = null; /* the next reconnect only: a 503's Retry-After */
    var controller = null;
    var stopped = false;
    var timer = null;

    function state(s) { if (handlers.onState) handlers.onState(s); }

    function dispatch(message) {
      if (message.id !== null) lastEventId = message.id;
      if (!message.data && message.event === "message") return;
      var data = null;
      try { data = message.data ? JSON.parse(message.data) : null; } catch (e) { data = null; }
      if (message.event === "error") { state("offline"); return; }
      handlers.onEvent({ id: message.id, event: message.event, data: data || {} });
    }

    function connect() {
      if (stopped) return;
      var token = getToken();
      if (!token) return;
      state("connecting");
      controller = new AbortController();
      var headers = { "Accept": "text/event-stream", "Authorization": "Bearer " + token };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      fetch(API + "/teams/" + encodeURIComponent(teamId) + "/events", {
        headers: headers, cache: "no-store", credentials: "omit", signal: controller.signal,
        referrerPolicy: "no-referrer"
      }).then(function (response) {
        if (response.status === 401) { needToken("That token was refused."); return; }
        var wait = parseInt(response.headers.get("Retry-After") || "", 10);
        if (response.status === 503 && wait > 0) delayMs = wait * 1000;
        if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
        state("connected");
        if (handlers.onOpen) handlers.onOpen();
        return read(response.body.getReader());
      }).catch(function () {
        /* network error or aborted: fall through to reconnect */
      }).then(function () {
        if (stopped) return;
        state("offline");
        timer = window.setTimeout(connect, delayMs !== null ? Math.max(delayMs, retryMs) : retryMs);
        delayMs = null;
      });
    }

    function read(reader) {
      var decoder = new TextDecoder("utf-8");
      var buffer = "";
      var message = { id: null, event: "message", data: "" };
      var hasData = false;

      function line(text) {
        if (text === "") {
          if (hasData || message.id !== null) {
            if (hasData) dispatch(message);
            else if (message.id !== null) lastEventId = message.id;
          }
          message = { id: null, event: "message", data: "" };
          hasData = false;
          return;
        }
        if (text.charAt(0) === ":") return; /* a comment: heartbeat */
        var colon = text.indexOf(":");
        var field = colon < 0 ? text : text.slice(0, colon);
        var value = colon < 0 ? "" : text.slice(colon + 1);
        if (value.charAt(0) === " ") value = value.slice(1);
        if (field === "id") message.id = value;
        else if (field === "event") message.event = value;
        else if (field === "data") { message.data += (hasData ? "\n" : "") + value; hasData = true; }
        else if (field === "retry" && /^\d+$/.test(value)) retryMs = Math.max(500, parseInt(value, 10));
      }

      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffer += decoder.decode(chunk.value, { stream: true });
          var match;
          var re = /\r\n|\r|\n/g;
          var startAt = 0;
          while ((match = re.exec(buffer)) !== null) {
            /* a lone \r at the very end may be the first half of \r\n: wait for more */
            if (match[0] === "\r" && match.index === buffer.length - 1) break;
            line(buffer.slice(startAt, match.index));
            startAt = match.index + match[0].length;
          }
          buffer = buffer.slice(startAt);
          return pump();
        });
      }
      return pump();
    }

    var handle = {
      stop: function () {
        stopped = true;
        if (timer) window.clearTimeout(timer);
        if (controller) controller.abort();
      },
      /* Resume from the newest event we saw (or from now on). */
      lastEventId: function () { return lastEventId; }
    };
    streams.push(handle);
    connect();
    return handle;
  }

  /* --- DOM helpers ------------------------------------------------------------------------- */

  /* el("td", {class: "num", dataset: {...}}, child, "text", ...): text is always textContent. */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "class") node.className = value;
        else if (key === "dataset") Object.keys(value).forEach(function (k) { node.dataset[k] = value[k]; });
        else if (key === "text") node.textContent = value;
        else node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function badge(status, text) {
    return el("span", { class: "badge status-" + status, dataset: { status: status } },
      (text || status).replace(/_/g, " "));
  }

  function setBadge(node, status) {
    if (!node) return;
    node.className = "badge status-" + status;
    node.dataset.status = status;
    node.textContent = status.replace(/_/g, " ");
  }

  function flash(node) {
    if (!node) return;
    node.classList.remove("flash");
    void node.getBoundingClientRect(); /* restart the animation */
    node.classList.add("flash");
  }

  function setLive(state) {
    var live = document.getElementById("live");
    live.hidden = false;
    live.className = "live " + state;
    live.dataset.state = state;
    live.querySelector(".live-text").textContent =
      state === "connected" ? "live" : state === "connecting" ? "connecting…" : "offline";
  }

  function banner(text) {
    var node = document.getElementById("banner");
    node.textContent = text;
    node.hidden = false;
    window.clearTimeout(banner.timer);
    banner.timer = window.setTimeout(function () { node.hidden = true; }, 4000);
  }

  function fmtTime(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    return isNaN(d.getTime()) ? iso : d.toLocaleString();
  }

  function fmtInt(n) { return n === null || n === undefined ? "—" : Number(n).toLocaleString(); }

  /* fn once calls stop for ms; with maxWait, also at least every maxWait ms while calls keep
   * coming (a busy team's events never stop for ms, and the page would never refresh). */
  function debounce(fn, ms, maxWait) {
    var timer = null;
    var first = null; // when the first call not yet served came
    function fire() {
      window.clearTimeout(timer);
      timer = null;
      first = null;
      fn();
    }
    return function () {
      var now = Date.now();
      if (first === null) first = now;
      if (timer) window.clearTimeout(timer);
      var wait = ms;
      if (maxWait > 0) wait = Math.max(0, Math.min(ms, first + maxWait - now));
      timer = window.setTimeout(fire, wait);
    };
  }

  window.Orch = {
    TASK_STATUSES: TASK_STATUSES,
    api: api,
    start: start,
    needToken: needToken,
    streamEvents: streamEvents,
    el: el,
    clear: clear,
    badge: badge,
    setBadge: setBadge,
    flash: flash,
    setLive: setLive,
    banner: banner,
    fmtTime: fmtTime,
    fmtInt: fmtInt,
    debounce: debounce
  };
})();
