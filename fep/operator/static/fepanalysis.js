/* fepanalysis.js: the status page's analysis charts. Part of fep (MIT).
 *
 *   FepAnalysis.lossAreas(body, n)  -> [{area, low, high, last, outOfBand, points}, ...]
 *       from GET /api/v1/balance/history: the n areas to chart, those whose last loss rate
 *       is out of their band first, then the highest last rate; points [[day, rate], ...]
 *       (null where a day has no rate).
 *   FepAnalysis.mapRows(body, max)  -> [{cells: [area, kind, members, out, outages,
 *       meters, area outages, suspected], depth, alert}, ...] from GET /api/v1/outages/map;
 *       with more than max areas, the quiet ones (nothing out, no outage) below the
 *       feeders are left out and a last row says how many.
 *   FepAnalysis.qualityRows(body)   -> [{cells: [day, meters, intervals, valid %,
 *       suspect %, estimated %, edited %, missing %], shares: [...]}, ...] from
 *       GET /api/v1/vee/quality.
 *   FepAnalysis.stackedBar(document, shares, width) -> an <svg> of one stacked bar.
 *   FepAnalysis.legend(document, element) -> fills element with the classes' colours.
 *
 * Pure functions of the answers (but stackedBar): node runs them in the tests.
 */
(function (global) {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var CLASSES = ["valid", "suspect", "estimated", "edited", "missing"];
  var COLORS = {valid: "#2a7f3f", suspect: "#d1495b", estimated: "#edae49",
                edited: "#6c4f8a", missing: "#bbbbbb"};

  function num(text) { return text === null || text === undefined ? null : Number(text); }

  function lossAreas(body, n) {
    var areas = body.areas.map(function (a) {
      var last = a.days.length ? num(a.days[a.days.length - 1].loss_rate) : null;
      var low = num(a.low), high = num(a.high);
      return {area: a.area, low: low, high: high, last: last,
              outOfBand: last !== null && (last > high || last < low || last < 0),
              points: a.days.map(function (d) { return [d.day, num(d.loss_rate)]; })};
    });
    areas.sort(function (x, y) {
      if (x.outOfBand !== y.outOfBand) return x.outOfBand ? -1 : 1;
      var lx = x.last === null ? -Infinity : x.last, ly = y.last === null ? -Infinity : y.last;
      if (lx !== ly) return ly - lx;
      return x.area < y.area ? -1 : x.area > y.area ? 1 : 0;
    });
    return areas.slice(0, n);
  }

  function quiet(a) { return a.depth >= 2 && !a.out && !a.outages && !a.area_outages && !a.suspected; }

  function mapRows(body, max) {
    var shown = body.areas.length > max ? body.areas.filter(function (a) { return !quiet(a); }) : body.areas;
    var rows = shown.map(function (a) {
      var suspected = a.suspected ? a.suspected + (a.suspected_open ? " (open)" : "") : 0;
      return {depth: a.depth, alert: a.alert,
              cells: [a.area + (a.name ? " " + a.name : ""), a.kind, a.members, a.out,
                      a.outages, a.meters, a.area_outages, suspected]};
    });
    var left = body.areas.length - shown.length;
    if (left) rows.push({depth: 0, alert: false, cells: [left + " quiet areas not shown"]});
    return rows;
  }

  function percent(part, whole) { return whole ? (100 * part / whole).toFixed(1) : ""; }

  function qualityRows(body) {
    return body.days.map(function (d) {
      var shares = CLASSES.map(function (c) { return d.intervals ? d[c] / d.intervals : 0; });
      return {shares: shares, cells: [d.day, d.meters, d.intervals].concat(
        CLASSES.map(function (c) { return percent(d[c], d.intervals); }))};
    });
  }

  function stackedBar(doc, shares, width) {
    var svg = doc.createElementNS(NS, "svg");
    svg.setAttribute("class", "fep-bar");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", "12");
    svg.setAttribute("role", "img");
    var x = 0;
    CLASSES.forEach(function (c, i) {
      var w = shares[i] * width;
      if (w <= 0) return;
      var r = doc.createElementNS(NS, "rect");
      r.setAttribute("x", x.toFixed(1));
      r.setAttribute("y", "0");
      r.setAttribute("width", w.toFixed(1));
      r.setAttribute("height", "12");
      r.setAttribute("fill", COLORS[c]);
      r.setAttribute("data-class", c);
      svg.appendChild(r);
      x += w;
    });
    return svg;
  }

  function legend(doc, element) {
    while (element.firstChild) element.removeChild(element.firstChild);
    CLASSES.forEach(function (c) {
      var svg = doc.createElementNS(NS, "svg");
      svg.setAttribute("width", "10");
      svg.setAttribute("height", "10");
      svg.setAttribute("class", "fep-legend-key");
      var r = doc.createElementNS(NS, "rect");
      r.setAttribute("width", "10");
      r.setAttribute("height", "10");
      r.setAttribute("fill", COLORS[c]);
      svg.appendChild(r);
      element.appendChild(svg);
      element.appendChild(doc.createTextNode(" " + c + " "));
    });
  }

  global.FepAnalysis = {lossAreas: lossAreas, mapRows: mapRows, qualityRows: qualityRows,
                        stackedBar: stackedBar, legend: legend, CLASSES: CLASSES,
                        COLORS: COLORS};
})(typeof window !== "undefined" ? window : globalThis);
