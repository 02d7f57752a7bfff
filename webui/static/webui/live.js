/*
 * Live updates of the Regis pages, without a framework.
 *
 * Opens the /ws/live/ websocket (events of registrar/events.py) and keeps
 * body[data-live] at "connecting", "connected" or "disconnected". A page says what
 * it shows with body[data-live-page]; after an event that concerns it, it re-fetches
 * its changing parts from the server (the same URL with ?partial=1, which returns
 * elements with ids) and swaps them in, at most once per REFRESH_DELAY however many
 * events arrive (the trace page once more shortly after, as traced messages are stored
 * after the events about them). The dashboard also prepends each event to #live-feed. Elements
 * .expires-in[data-expires-at] count down every second, and .talk-time[data-since] count up.
 *
 * The server renders every row; this file only decides when to ask for them again,
 * so a page shows the same thing whether it was loaded or updated.
 */
(function () {
  "use strict";

  var REFRESH_DELAY = 300;
  var TRACE_SETTLE = 1500;
  var RECONNECT_MIN = 1000;
  var RECONNECT_MAX = 30000;
  var FEED_LENGTH = 50;
  var FORBIDDEN = 4403; // the consumer's close code: logged out, or no role

  var body = document.body;
  var page = body.dataset.livePage || "";
  var timeZone = body.dataset.timeZone || undefined;
  // Countdowns use the server's clock: expiry times are the server's.
  var clockOffset = Number(body.dataset.serverTime) ? Number(body.dataset.serverTime) - Date.now() / 1000 : 0;

  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  // -- countdowns ------------------------------------------------------------------
  function pad(number) {
    return number < 10 ? "0" + number : String(number);
  }

  /* Mirrors the countdown filter of webui/templatetags/regis.py. */
  function countdown(seconds) {
    seconds = Math.floor(seconds);
    if (seconds <= 0) return "expired";
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = seconds % 60;
    if (hours) return hours + " h " + pad(minutes) + " min";
    if (minutes) return minutes + " min " + pad(rest) + " s";
    return rest + " s";
  }

  /* Mirrors talk_time of webui/views.py: 0:07, 12:30, 1:02:03. */
  function talkTime(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = pad(seconds % 60);
    return hours ? hours + ":" + pad(minutes) + ":" + rest : minutes + ":" + rest;
  }

  function tick() {
    document.querySelectorAll(".talk-time[data-since]").forEach(function (element) {
      element.textContent = talkTime(serverNow() - Number(element.dataset.since));
    });
    var ended = false;
    document.querySelectorAll(".expires-in[data-expires-at]").forEach(function (element) {
      var left = Number(element.dataset.expiresAt) - serverNow();
      element.textContent = countdown(left);
      // A second's grace so that the server, asked again, agrees the binding is gone.
      if (left <= -1 && !element.classList.contains("expired")) {
        element.classList.add("expired");
        ended = true;
      }
    });
    if (ended) scheduleRefresh();
  }

  // -- partial refresh -------------------------------------------------------------
  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false;

  function scheduleRefresh() {
    if (!page || refreshTimer) return;
    refreshTimer = setTimeout(refresh, REFRESH_DELAY);
  }

  function refresh() {
    refreshTimer = null;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    var url = new URL(location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        // A redirect means the session ended (to /login/): keep what is shown.
        if (!response.ok || response.redirected) throw new Error("refresh: HTTP " + response.status);
        return response.text();
      })
      .then(swap)
      .catch(function (error) {
        console.warn(error);
      })
      .then(function () {
        refreshing = false;
        if (refreshAgain) {
          refreshAgain = false;
          scheduleRefresh();
        }
      });
  }

  function elementsOf(template) {
    return Array.prototype.slice.call(template.content.children);
  }

  /* Replaces each element of the fragment that has an id with the page's element of that
   * id. A <template> parses table rows and SVG, unlike a <div>; a fragment mixing rows
   * with other elements wraps each part in a <template> of its own, because the parser
   * takes its mode from the first element. */
  function swap(html) {
    var outer = document.createElement("template");
    outer.innerHTML = html;
    elementsOf(outer).forEach(function (element) {
      (element.tagName === "TEMPLATE" ? elementsOf(element) : [element]).forEach(function (fresh) {
        var current = fresh.id && document.getElementById(fresh.id);
        if (current) current.replaceWith(fresh);
      });
    });
    tick();
  }

  function onLaterPage() {
    var number = Number(new URLSearchParams(location.search).get("page") || "1");
    return number > 1;
  }

  function concerns(event) {
    switch (page) {
      case "dashboard":
        // Bans and soft parameters change the policy notices; trunk events the trunk counts; call
        // events the count of active calls; alert events the emergency banners.
        return event.type === "registration" || event.type === "attempt" || event.type === "ban" ||
          event.type === "softparam" || event.type === "trunk" || event.type === "call" ||
          event.type === "alert";
      case "calls":
        return event.type === "call";
      case "bans":
        return event.type === "ban";
      case "trace":
        return event.type === "registration" || event.type === "attempt" ||
          (event.type === "softparam" && (event.number === 310 || event.number === 311));
      case "registrations":
        // A qualify event: a contact's status or round-trip time changed in its row.
        return event.type === "registration" || event.type === "qualify";
      case "attempts":
        // Later pages would shift under the reader's eyes; they catch up on navigation.
        return event.type === "attempt" && !onLaterPage();
      case "trunks":
        return event.type === "trunk";
      case "trunk":
        return event.type === "trunk" && String(event.id) === body.dataset.trunk;
      case "extension":
        return (event.type === "registration" || event.type === "attempt" || event.type === "qualify") &&
          event.extension === body.dataset.extension;
    }
    return false;
  }

  // -- the dashboard's feed ----------------------------------------------------------
  function clockTime(seconds) {
    var date = new Date(seconds * 1000);
    try {
      return date.toLocaleTimeString("en-GB", { timeZone: timeZone, hour12: false });
    } catch (error) {
      return date.toLocaleTimeString("en-GB", { hour12: false });
    }
  }

  function shownValue(value) {
    if (value === true) return "on";
    if (value === false) return "off";
    if (Array.isArray(value)) return value.join(", ");
    return value === null || value === undefined ? "" : String(value);
  }

  /* Mirrors templates/webui/_feed_item.html; text only, as User-Agents are untrusted. */
  function feedItem(event) {
    var item = document.createElement("li");
    item.className = "event " + event.type + (event.type === "attempt" ? " failed" : "");
    var time = document.createElement("time");
    time.dateTime = new Date(event.at * 1000).toISOString();
    time.textContent = clockTime(event.at);
    item.appendChild(time);
    var text = "";
    var aside = "";
    if (event.type === "registration") {
      text = event.extension + " " + event.action + " from " + event.source + " (" + event.transport + ")";
      aside = event.user_agent || "";
    } else if (event.type === "attempt") {
      text = (event.extension || event.auth_username || "?") + ": " + event.explanation;
      aside = "from " + event.source + (event.user_agent ? ", " + event.user_agent : "");
    } else if (event.type === "softparam") {
      text = "Soft parameter " + event.number + " " + event.name + " set to " + shownValue(event.value) +
        " by " + event.by;
    } else if (event.type === "ban") {
      text = event.ip + " " + event.action + (event.detail ? ": " + event.detail : "");
    } else {
      return null;
    }
    item.appendChild(document.createTextNode(" " + text));
    if (aside) {
      var muted = document.createElement("span");
      muted.className = "muted";
      muted.textContent = aside;
      item.appendChild(document.createTextNode(" "));
      item.appendChild(muted);
    }
    return item;
  }

  function addToFeed(event) {
    var feed = document.getElementById("live-feed");
    var item = feed && feedItem(event);
    if (!item) return;
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > FEED_LENGTH) feed.removeChild(feed.lastChild);
    var empty = document.getElementById("live-feed-empty");
    if (empty) empty.remove();
  }

  // -- the websocket -----------------------------------------------------------------
  var reconnectDelay = RECONNECT_MIN;
  var connectedBefore = false;

  function receive(message) {
    var data;
    try {
      data = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    (data.events || []).forEach(function (event) {
      if (page === "dashboard") addToFeed(event);
      if (!concerns(event)) return;
      scheduleRefresh();
      // The worker stores traced messages just after it answers: look again once they are in.
      if (page === "trace") setTimeout(scheduleRefresh, TRACE_SETTLE);
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/live/");
    body.dataset.live = "connecting";
    socket.onopen = function () {
      body.dataset.live = "connected";
      reconnectDelay = RECONNECT_MIN;
      // Events sent while the socket was down are lost: ask for the current state.
      if (connectedBefore) scheduleRefresh();
      connectedBefore = true;
    };
    socket.onmessage = receive;
    socket.onclose = function (event) {
      body.dataset.live = "disconnected";
      if (event.code === FORBIDDEN) return;
      // Jitter, so that every open page does not reconnect at the same instant.
      setTimeout(connect, reconnectDelay * (1 + Math.random() / 2));
      reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX);
    };
  }

  // -- soft parameter forms ----------------------------------------------------------
  // A toggle flipped but not saved says so, and its Save button stands out.
  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (!form || !form.classList.contains("param-form")) return;
    form.classList.add("dirty");
    if (event.target.type === "checkbox") {
      var label = form.querySelector('label[for="' + event.target.id + '"]');
      if (label) label.textContent = (event.target.checked ? "on" : "off") + " (not saved)";
    }
  });

  tick();
  setInterval(tick, 1000);
  connect();
})();
