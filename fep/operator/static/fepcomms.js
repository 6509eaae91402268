/* fepcomms.js: the status page's communication analysis panel. Part of fep (MIT).
 *
 *   FepComms.summary(body)  -> [[scope, key, jobs, ok, rate, "below" | ""], ...]
 *   FepComms.below(body, n) -> [[meter, jobs, ok, rate, last failed, last error], ...]
 *
 * `body` is the answer of GET /api/v1/comms. The summary holds every row but the meters'
 * (the meters below the target have their own table, worst first, the first n of them).
 * Pure functions of the answer: no DOM, so node runs them in the tests.
 */
(function (global) {
  "use strict";

  function shortTime(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
  }

  function summary(body) {
    return body.rows.filter(function (r) { return r.scope !== "meter"; }).map(function (r) {
      return [r.scope, r.key, r.jobs, r.ok, r.rate === null ? "" : r.rate, r.below ? "below" : ""];
    });
  }

  function below(body, n) {
    return body.below.slice(0, n).map(function (m) {
      return [m.meter, m.jobs, m.ok, m.rate, shortTime(m.last_failed), m.last_error];
    });
  }

  global.FepComms = {summary: summary, below: below};
})(typeof window !== "undefined" ? window : globalThis);
