/* fep status page: reads the JSON API with the operator's token and draws the fleet,
 * channels, live sessions, success rate, recent alarms, the communication analysis, the
 * analysis charts (area loss over time, the outage map, interval quality) and a meter's
 * load profile.
 * The token comes from the address's fragment (#token=...) or the form, and is kept in
 * sessionStorage for this tab only. */
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  // The analysis charts change once a day: read again every 5 minutes, not every refresh.
  var ANALYSIS_MS = 300000;
  var LOSS_CHARTS = 12;
  var MAP_ROWS = 200;
  var analysisRead = 0;
  var token = null;
  var chosenMeter = null;

  function $(id) { return document.getElementById(id); }

  function readToken() {
    var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem("fep-token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("fep-token");
  }

  function api(path) {
    return fetch("/api/v1/" + path, {headers: {Authorization: "Bearer " + token}})
      .then(function (r) {
        if (r.status === 401) { showLogin("the token was refused"); throw new Error("401"); }
        if (!r.ok) return r.json().then(function (b) { throw new Error(b.error || r.statusText); });
        return r.json();
      });
  }

  function showLogin(why) {
    $("login").hidden = false;
    $("error").textContent = why || "";
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function fill(tableId, rows, columns) {
    var body = $(tableId).querySelector("tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      columns.forEach(function (c) {
        var v = typeof c === "function" ? c(row) : row[c];
        cell(tr, v, c === "severity" ? row.severity : null);
      });
      body.appendChild(tr);
    });
    if (!rows.length) {
      var tr = document.createElement("tr");
      cell(tr, "none");
      body.appendChild(tr);
    }
  }

  function shortTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : ""; }

  function refreshStats() {
    return api("stats").then(function (s) {
      $("node").textContent = s.node;
      $("meters").textContent = s.meters;
      $("meters-ok").textContent = s.meters_ok;
      $("meters-failing").textContent = s.meters_failing;
      $("meters-never").textContent = s.meters_never_read;
      $("sessions-count").textContent = s.sessions;
      $("spool").textContent = s.router.spool_depth;
      fillPlans(s.plans || []);
    });
  }

  // Control plans: a progress bar (meters that ended of all) and the outcome counts.
  function fillPlans(plans) {
    fill("plans", plans, [
      function (p) { return p.id + " " + p.name; }, "action", "status",
      function () { return ""; },
      function (p) { return p.counts.done; }, function (p) { return p.counts.failed; },
      function (p) { return p.counts["not-supported"]; },
      function (p) { return p.counts.skipped; },
      function (p) { return p.counts.pending + p.counts.released; },
      "created_by", "approved_by"]);
    var rows = $("plans").querySelectorAll("tbody tr");
    plans.forEach(function (p, i) {
      var td = rows[i].children[3];
      var bar = document.createElement("progress");
      var ended = p.meters - p.counts.pending - p.counts.released;
      bar.setAttribute("max", String(p.meters));
      bar.setAttribute("value", String(ended));
      bar.setAttribute("data-plan", String(p.id));
      td.appendChild(bar);
      td.appendChild(document.createTextNode(" " + ended + "/" + p.meters));
    });
  }

  function refreshSuccess() {
    return api("success-rate?minutes=120").then(function (r) {
      FepChart.line($("success-chart"), {
        yLabel: "% of reads ok", yMin: 0, yMax: 100,
        series: [{name: "success rate", color: "#2a7f3f", points: r.buckets.map(function (b) {
          return [b.start, b.rate === null ? null : 100 * b.rate];
        })}],
        emptyText: "no reads yet"
      });
    });
  }

  function refreshTables() {
    return Promise.all([
      api("channels").then(function (r) {
        fill("channels", r.channels, ["channel", "meters", "meters_failing", "sessions", "reads_ok", "reads_failed",
          function (c) { return shortTime(c.last); }]);
      }),
      api("sessions").then(function (r) {
        fill("sessions", r.sessions, ["meter", "route", "protocol", "direction",
          function (s) { return shortTime(s.started); }]);
      }),
      api("alarms?limit=20").then(function (r) {
        fill("alarms", r.alarms, [function (a) { return shortTime(a.time); }, "meter", "kind", "severity", "count", "text"]);
      })
    ]);
  }

  // Communication analysis of the last 24 hours (fepcomms.js shapes the rows).
  function refreshComms() {
    var since = new Date(Date.now() - 86400000).toISOString();
    return api("comms?from=" + encodeURIComponent(since)).then(function (r) {
      $("comms-target").textContent = "target " + r.target + " %";
      fillCells("comms", FepComms.summary(r));
      fillCells("comms-below", FepComms.below(r, 20));
    });
  }

  // Yesterday's (UTC) area balances as stored: no balance is computed for the page.
  function refreshBalance() {
    var day = new Date(Date.now() - 86400000).toISOString().slice(0, 10);
    return api("balance?stored=yes&day=" + day).then(function (r) {
      fill("balance", r.areas, ["area", "input", "consumption", "loss",
        function (a) { return a.loss_rate === null ? "" : a.loss_rate; }, "complete",
        function (a) { return a.alarm || ""; }]);
    });
  }

  function day(offset) { return new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10); }

  // The analysis charts, from stored rows only (balances, outages, interval quality).
  function refreshAnalysis() {
    if (analysisRead && Date.now() - analysisRead < ANALYSIS_MS) return null;
    var to = day(0);
    return Promise.all([
      api("balance/history?from=" + day(-30) + "&to=" + to).then(drawLoss),
      api("outages/map?from=" + day(-7) + "&to=" + to).then(drawOutageMap),
      api("vee/quality?from=" + day(-30) + "&to=" + to).then(drawQuality)
    ]).then(function () { analysisRead = Date.now(); });
  }

  function drawLoss(body) {
    var box = $("loss-charts");
    while (box.firstChild) box.removeChild(box.firstChild);
    var areas = FepAnalysis.lossAreas(body, LOSS_CHARTS);
    if (!areas.length) { box.appendChild(document.createTextNode("no balance stored")); return; }
    areas.forEach(function (a) {
      var div = document.createElement("div");
      div.className = "small-chart" + (a.outOfBand ? " out-of-band" : "");
      div.setAttribute("data-area", a.area);
      var h = document.createElement("h3");
      h.textContent = a.area + (a.last === null ? "" : ": " + a.last + " %") +
        " (band " + a.low + "\u2013" + a.high + " %)";
      div.appendChild(h);
      var chart = document.createElement("div");
      div.appendChild(chart);
      box.appendChild(div);
      FepChart.line(chart, {width: 300, height: 140, days: true, yLabel: "loss %",
                            band: {low: a.low, high: a.high},
                            series: [{name: a.area, color: a.outOfBand ? "#b3261e" : "#2a6f97",
                                      points: a.points}],
                            emptyText: "no loss rate"});
    });
  }

  function tableBody(id) {
    var body = $(id).querySelector("tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    return body;
  }

  function drawOutageMap(body) {
    var tbody = tableBody("outage-map");
    FepAnalysis.mapRows(body, MAP_ROWS).forEach(function (row) {
      var tr = document.createElement("tr");
      if (row.alert) tr.className = "alert";
      row.cells.forEach(function (v, i) { cell(tr, v, i === 0 && row.depth ? "depth-" + Math.min(row.depth, 3) : null); });
      tbody.appendChild(tr);
    });
    if (!body.areas.length) { var tr = document.createElement("tr"); cell(tr, "no areas"); tbody.appendChild(tr); }
  }

  function drawQuality(body) {
    $("quality-channel").textContent = "(channel " + body.channel + ", as each day's VEE run left it)";
    FepAnalysis.legend(document, $("quality-legend"));
    var tbody = tableBody("quality");
    FepAnalysis.qualityRows(body).forEach(function (row) {
      var tr = document.createElement("tr");
      row.cells.forEach(function (v) { cell(tr, v); });
      var td = document.createElement("td");
      td.appendChild(FepAnalysis.stackedBar(document, row.shares, 200));
      tr.appendChild(td);
      tbody.appendChild(tr);
    });
    if (!body.days.length) { var tr = document.createElement("tr"); cell(tr, "no VEE run stored"); tbody.appendChild(tr); }
  }

  function fillCells(tableId, rows) {
    fill(tableId, rows, [0, 1, 2, 3, 4, 5].map(function (i) {
      return function (row) { return row[i]; };
    }));
  }

  function refreshMeters() {
    return api("meters").then(function (r) {
      var select = $("profile-meter");
      var known = Array.prototype.map.call(select.options, function (o) { return o.value; }).join(",");
      var ids = r.meters.map(function (m) { return m.id; });
      if (known !== ids.join(",")) {
        while (select.firstChild) select.removeChild(select.firstChild);
        ids.forEach(function (id) {
          var o = document.createElement("option");
          o.value = id; o.textContent = id;
          select.appendChild(o);
        });
      }
      if (!chosenMeter || ids.indexOf(chosenMeter) < 0) {
        // The first meter that has a load profile is shown; the operator can pick another.
        chosenMeter = null;
        return pickMeterWithProfile(ids, 0);
      }
    });
  }

  function pickMeterWithProfile(ids, i) {
    if (i >= ids.length) { chosenMeter = ids[0] || null; return; }
    return api("meters/" + encodeURIComponent(ids[i]) + "/profile").then(function (p) {
      if (p.blocks.length) { chosenMeter = ids[i]; $("profile-meter").value = ids[i]; return; }
      return pickMeterWithProfile(ids, i + 1);
    });
  }

  function refreshProfile() {
    if (!chosenMeter) { FepChart.line($("profile-chart"), {series: [], emptyText: "no meter"}); return; }
    var since = new Date(Date.now() - 2 * 86400000).toISOString();
    return api("meters/" + encodeURIComponent(chosenMeter) + "/profile?from=" + encodeURIComponent(since)).then(function (p) {
      var byObis = {};
      p.blocks.forEach(function (b) {
        var key = b.obis + (b.unit ? " (" + b.unit + ")" : "");
        byObis[key] = (byObis[key] || []).concat(b.points.map(function (pt) { return [pt[0], pt[1] === null ? null : Number(pt[1])]; }));
      });
      var names = Object.keys(byObis);
      FepChart.line($("profile-chart"), {
        legend: true,
        yLabel: p.blocks.length && p.blocks[0].unit ? p.blocks[0].unit : "",
        series: names.map(function (n) { return {name: n, points: byObis[n]}; }),
        emptyText: "no load profile stored for " + chosenMeter
      });
    });
  }

  function refresh() {
    if (!token) { showLogin(); return; }
    Promise.all([refreshStats(), refreshSuccess(), refreshTables(), refreshComms(),
                 refreshBalance(), refreshAnalysis(), refreshMeters().then(refreshProfile)])
      .then(function () {
        $("error").textContent = "";
        $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
        document.body.setAttribute("data-loaded", "yes");
      })
      .catch(function (e) { if (e.message !== "401") $("error").textContent = e.message; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    token = readToken();
    $("login").addEventListener("submit", function (ev) {
      ev.preventDefault();
      token = $("token").value;
      sessionStorage.setItem("fep-token", token);
      $("login").hidden = true;
      refresh();
    });
    $("profile-meter").addEventListener("change", function (ev) {
      chosenMeter = ev.target.value;
      refreshProfile();
    });
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
