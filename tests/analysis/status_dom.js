// A minimal DOM and fetch for running the status page's scripts in node
// (tests/analysis/test_comms_api.py): enough of document, elements, sessionStorage,
// location and fetch for status.js; FepChart is stubbed (its calls with a band are kept).
// Arguments: a JSON file mapping API paths (before "?") to answers, and the static folder.
// Prints data-loaded, the tables' cells, the loss charts and the outage map's and quality
// table's rows.
"use strict";
var fs = require("fs");
var vm = require("vm");
var answers = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
var staticDir = process.argv[3];

function Element(tag) {
  this.tagName = tag; this.children = []; this.attributes = {}; this.textContent = "";
  this.hidden = false; this.value = ""; this.options = []; this.listeners = {};
}
Element.prototype.appendChild = function (c) { this.children.push(c); c.parentNode = this; return c; };
Element.prototype.removeChild = function (c) { this.children.splice(this.children.indexOf(c), 1); return c; };
Object.defineProperty(Element.prototype, "firstChild", {get: function () { return this.children[0] || null; }});
Element.prototype.setAttribute = function (k, v) { this.attributes[k] = String(v); };
Element.prototype.addEventListener = function (ev, f) { this.listeners[ev] = f; };
Element.prototype.querySelector = function (sel) {
  if (sel === "tbody") { if (!this.tbody) this.tbody = new Element("tbody"); return this.tbody; }
  return null;
};
Element.prototype.querySelectorAll = function () { return this.tbody ? this.tbody.children : []; };

var elements = {};
var body = new Element("body");
var docListeners = {};
var document = {
  body: body,
  getElementById: function (id) { if (!elements[id]) elements[id] = new Element("div"); return elements[id]; },
  createElement: function (tag) { return new Element(tag); },
  createElementNS: function (ns, tag) { var e = new Element(tag); e.namespaceURI = ns; return e; },
  createTextNode: function (t) { var e = new Element("#text"); e.textContent = t; return e; },
  addEventListener: function (ev, f) { docListeners[ev] = f; }
};
var storage = {"fep-token": "t"};
var bandCharts = [];
var asked = [];
var sandbox = {
  document: document, console: console, Promise: Promise, Date: Date, JSON: JSON,
  encodeURIComponent: encodeURIComponent, decodeURIComponent: decodeURIComponent,
  location: {hash: "", pathname: "/status", search: ""},
  history: {replaceState: function () {}},
  sessionStorage: {getItem: function (k) { return storage[k] || null; },
                   setItem: function (k, v) { storage[k] = v; }},
  setInterval: function () {},
  FepChart: {line: function (element, opts) { if (opts.band) bandCharts.push(opts); }},
  fetch: function (url) {
    asked.push(url);
    var path = url.replace("/api/v1/", "").split("?")[0];
    var known = Object.prototype.hasOwnProperty.call(answers, path);
    if (!known && /^meters\/[^/]+\/profile$/.test(path)) { path = "profile"; known = true; }
    return Promise.resolve({
      status: known ? 200 : 404, ok: known, statusText: known ? "OK" : "Not Found",
      json: function () { return Promise.resolve(known ? answers[path] : {error: "no " + path}); }
    });
  }
};
sandbox.window = sandbox;
vm.createContext(sandbox);
["fepcomms.js", "fepanalysis.js", "status.js"].forEach(function (name) {
  vm.runInContext(fs.readFileSync(staticDir + "/" + name, "utf8"), sandbox, {filename: name});
});
docListeners.DOMContentLoaded();

function cells(id) {
  var tb = elements[id] && elements[id].tbody;
  return tb ? tb.children.map(function (tr) { return tr.children.map(function (td) { return td.textContent; }); }) : null;
}
function rows(id) {
  var tb = elements[id] && elements[id].tbody;
  return tb ? tb.children.map(function (tr) {
    return {className: tr.className || "", cells: tr.children.map(function (td) {
      var svg = td.children[0];
      if (svg && svg.tagName === "svg") {
        return svg.children.map(function (r) { return r.attributes["data-class"] + " " + r.attributes.width; }).join(", ");
      }
      return (td.className ? "[" + td.className + "] " : "") + td.textContent;
    })};
  }) : null;
}
setTimeout(function () {
  process.stdout.write(JSON.stringify({
    loaded: body.attributes["data-loaded"] || null, error: elements.error.textContent,
    target: elements["comms-target"].textContent, comms: cells("comms"), below: cells("comms-below"),
    balance: cells("balance"),
    asked: asked.filter(function (u) { return /history|map|quality/.test(u); }),
    lossCharts: elements["loss-charts"].children.map(function (div) {
      return {area: div.attributes["data-area"], className: div.className,
              title: div.children[0].textContent};
    }),
    bands: bandCharts.map(function (o) { return {band: o.band, points: o.series[0].points}; }),
    outageMap: rows("outage-map"),
    quality: rows("quality"),
    qualityChannel: elements["quality-channel"].textContent
  }));
}, 200);
