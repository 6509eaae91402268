/* fepchart.js: a small SVG time-series chart for fep's status page. Part of fep (MIT).
 *
 *   FepChart.line(element, {
 *     series: [{name: "kWh", points: [[Date or ms, number], ...], color: "#2a6f97"}],
 *     yLabel: "kWh", yMin: 0, yMax: null, kind: "line" | "bars",
 *     band: {low: 2, high: 5}, days: false
 *   });
 *
 * Draws into `element` (replacing what it holds) an <svg class="fep-chart"> with time on x,
 * values on y, ticks on both, one polyline (or bar run) per series and a legend. The svg's
 * data-points attribute says how many points were drawn; data-series how many series. A
 * band is drawn as a shaded strip between its low and high values (g.fep-chart-band, with
 * data-low and data-high; the y range includes it); days: the time axis shows dates only.
 * No dependencies, no build step.
 */
(function (global) {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#2a6f97", "#d1495b", "#66a182", "#edae49", "#6c4f8a", "#00798c"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) node.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    var raw = span / Math.max(count, 1);
    var mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    var norm = raw / mag;
    var step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return step * mag;
  }

  function fmtNumber(v) {
    var a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1).replace(/\.0$/, "");
    return v.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function fmtTime(ms, span, days) {
    var d = new Date(ms);
    if (days) return pad(d.getUTCDate()) + "/" + pad(d.getUTCMonth() + 1);
    var hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (span < 2 * 86400000) return hm;
    return pad(d.getUTCDate()) + "/" + pad(d.getUTCMonth() + 1) + " " + hm;
  }

  function line(element, options) {
    var opts = options || {};
    var width = opts.width || element.clientWidth || 600;
    var height = opts.height || 220;
    var m = {top: 12, right: opts.days ? 20 : 12, bottom: 28, left: 52};
    var series = (opts.series || []).map(function (s, i) {
      var pts = (s.points || []).map(function (p) {
        var t = p[0] instanceof Date ? p[0].getTime() : typeof p[0] === "string" ? Date.parse(p[0]) : p[0];
        return [t, p[1] === null || p[1] === undefined ? null : Number(p[1])];
      }).filter(function (p) { return isFinite(p[0]); });
      return {name: s.name || "series " + (i + 1), color: s.color || PALETTE[i % PALETTE.length], points: pts};
    });
    while (element.firstChild) element.removeChild(element.firstChild);
    var svg = el("svg", {"class": "fep-chart", width: width, height: height,
                         viewBox: "0 0 " + width + " " + height, role: "img"}, element);
    var all = [];
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] !== null && isFinite(p[1])) all.push(p); }); });
    svg.setAttribute("data-points", String(all.length));
    svg.setAttribute("data-series", String(series.length));
    if (opts.title) el("title", {}, svg).textContent = opts.title;
    if (!all.length) {
      var empty = el("text", {x: width / 2, y: height / 2, "text-anchor": "middle", "class": "fep-chart-empty"}, svg);
      empty.textContent = opts.emptyText || "no data";
      return svg;
    }
    var t0 = Math.min.apply(null, all.map(function (p) { return p[0]; }));
    var t1 = Math.max.apply(null, all.map(function (p) { return p[0]; }));
    if (t1 === t0) { t0 -= 60000; t1 += 60000; }
    var y0 = opts.yMin !== undefined && opts.yMin !== null ? opts.yMin : Math.min(0, Math.min.apply(null, all.map(function (p) { return p[1]; })));
    var y1 = opts.yMax !== undefined && opts.yMax !== null ? opts.yMax : Math.max.apply(null, all.map(function (p) { return p[1]; }));
    var band = opts.band && opts.band.low !== null && opts.band.high !== null ? opts.band : null;
    if (band) { y0 = Math.min(y0, band.low); y1 = Math.max(y1, band.high); }
    if (y1 === y0) { y1 = y0 + 1; }
    if (opts.yMax === undefined || opts.yMax === null) { y1 += (y1 - y0) * 0.1; }
    var pw = width - m.left - m.right, ph = height - m.top - m.bottom;
    function X(t) { return m.left + (t - t0) / (t1 - t0) * pw; }
    function Y(v) { return m.top + ph - (v - y0) / (y1 - y0) * ph; }

    var grid = el("g", {"class": "fep-chart-grid"}, svg);
    var ystep = niceStep(y1 - y0, 4);
    for (var yv = Math.ceil(y0 / ystep) * ystep; yv <= y1 + 1e-9; yv += ystep) {
      el("line", {x1: m.left, x2: width - m.right, y1: Y(yv), y2: Y(yv), stroke: "#ddd"}, grid);
      var yl = el("text", {x: m.left - 6, y: Y(yv) + 4, "text-anchor": "end", "font-size": 11, fill: "#555"}, grid);
      yl.textContent = fmtNumber(yv);
    }
    var tstep = niceStep(t1 - t0, 5);
    var units = [60000, 300000, 900000, 3600000, 3 * 3600000, 6 * 3600000, 86400000];
    for (var u = 0; u < units.length; u++) { if (units[u] >= tstep) { tstep = units[u]; break; } }
    if (opts.days) tstep = Math.max(1, Math.round(tstep / 86400000)) * 86400000;
    for (var tv = Math.ceil(t0 / tstep) * tstep; tv <= t1; tv += tstep) {
      el("line", {x1: X(tv), x2: X(tv), y1: m.top + ph, y2: m.top + ph + 4, stroke: "#888"}, grid);
      var xl = el("text", {x: X(tv), y: height - 8, "text-anchor": "middle", "font-size": 11, fill: "#555"}, grid);
      xl.textContent = fmtTime(tv, t1 - t0, opts.days);
    }
    if (band) {
      var bg = el("g", {"class": "fep-chart-band", "data-low": String(band.low), "data-high": String(band.high)}, svg);
      el("rect", {x: m.left, y: Y(band.high), width: pw, height: Math.max(Y(band.low) - Y(band.high), 0.5),
                  fill: "#2a7f3f", "fill-opacity": 0.1}, bg);
      [band.low, band.high].forEach(function (v) {
        el("line", {x1: m.left, x2: width - m.right, y1: Y(v), y2: Y(v), stroke: "#2a7f3f",
                    "stroke-dasharray": "4 3"}, bg);
      });
    }
    el("line", {x1: m.left, x2: width - m.right, y1: m.top + ph, y2: m.top + ph, stroke: "#888"}, svg);
    el("line", {x1: m.left, x2: m.left, y1: m.top, y2: m.top + ph, stroke: "#888"}, svg);
    if (opts.yLabel) {
      var lab = el("text", {x: 12, y: m.top + ph / 2, "font-size": 11, fill: "#333",
                            transform: "rotate(-90 12 " + (m.top + ph / 2) + ")", "text-anchor": "middle"}, svg);
      lab.textContent = opts.yLabel;
    }

    series.forEach(function (s, i) {
      var g = el("g", {"class": "fep-chart-series", "data-name": s.name, "data-points": String(s.points.length)}, svg);
      if (opts.kind === "bars") {
        var bw = Math.max(1, pw / Math.max(s.points.length, 1) * 0.8 / series.length);
        s.points.forEach(function (p) {
          if (p[1] === null) return;
          var top = Y(Math.max(p[1], 0)), base = Y(Math.min(p[1], 0));
          el("rect", {x: X(p[0]) - bw / 2 + i * bw, y: top, width: bw, height: Math.max(base - top, 0.5), fill: s.color}, g);
        });
        return;
      }
      var runs = [[]];
      s.points.forEach(function (p) {
        if (p[1] === null) { runs.push([]); return; }
        runs[runs.length - 1].push(X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1));
      });
      runs.forEach(function (run) {
        if (!run.length) return;
        if (run.length === 1) {
          var xy = run[0].split(",");
          el("circle", {cx: xy[0], cy: xy[1], r: 3, fill: s.color}, g);
        } else {
          el("polyline", {points: run.join(" "), fill: "none", stroke: s.color, "stroke-width": 2}, g);
        }
      });
    });
    if (series.length > 1 || opts.legend) {
      var lg = el("g", {"class": "fep-chart-legend"}, svg);
      series.forEach(function (s, i) {
        el("rect", {x: m.left + 8 + i * 110, y: m.top, width: 10, height: 10, fill: s.color}, lg);
        var t = el("text", {x: m.left + 22 + i * 110, y: m.top + 9, "font-size": 11, fill: "#333"}, lg);
        t.textContent = s.name;
      });
    }
    return svg;
  }

  global.FepChart = {line: line};
})(typeof window !== "undefined" ? window : this);
