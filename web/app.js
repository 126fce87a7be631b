// ftsd web pages: draws the plots with uPlot from the JSON named in each
// <figure class="plot" data-kind="..." data-series="...">, and redraws them every
// PLOT_REFRESH_MS. The tables refresh through htmx (hx-trigger on #live). No inline code:
// the pages run under Content-Security-Policy default-src 'self'.
(function () {
  'use strict';

  const PLOT_REFRESH_MS = 30000;
  const HEIGHT = 240;
  const MIB = 1024 * 1024;

  // FTS times are UTC: draw the axes in UTC whatever the browser's zone.
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC');
  const stepped = () => uPlot.paths.stepped({ align: 1 });
  const mibs = (v) => (v == null ? '' : v.toFixed(2) + ' MiB/s');
  const iso = (ts) => new Date(ts * 1e3).toISOString();
  // The time axis and the legend's time, in UTC, 24 h.
  // Seconds when the plot spans less than SHORT_SPAN seconds.
  const SHORT_SPAN = 600;
  const timeAxis = {
    space: 70,
    values: (u, splits) => {
      const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
      return splits.map((ts) => iso(ts).slice(11, span < SHORT_SPAN ? 19 : 16));
    },
  };
  const timeSeries = { value: (u, ts) => (ts == null ? '--' : iso(ts).slice(0, 19).replace('T', ' ')) };

  // Per-minute columns with a row for every minute of the last `window` seconds (the server
  // sends only the minutes that saw something).
  function fillMinutes(c, window) {
    if (!window) return c;
    const end = Math.floor(Date.now() / 60000) * 60;
    const at = new Map(c[0].map((t, i) => [t, i]));
    const out = c.map(() => []);
    for (let t = end - Math.floor(window / 60) * 60 + 60; t <= end; t += 60) {
      const i = at.get(t);
      out[0].push(t);
      for (let k = 1; k < c.length; k++) out[k].push(i === undefined ? 0 : c[k][i]);
    }
    return out;
  }
  const axis = (label, scale, side, fmt) => ({
    label, scale, side, size: 80,
    values: fmt ? (u, vals) => vals.map(fmt) : undefined,
    grid: { show: side !== 1 },
  });

  // Each kind: (columns from the server) -> [uPlot options, data].
  const kinds = {
    // /ftsmon/series: [[ts], [finished], [failed], [bytes]] per minute.
    transfers(c, el) {
      c = fillMinutes(c, Number(el.dataset.window));
      const thr = c[3].map((b) => b / 60 / MIB);
      return [{
        scales: { n: {}, thr: {} },
        series: [
          timeSeries,
          { label: 'finished/min', stroke: '#2e7d32', width: 2, scale: 'n' },
          { label: 'failed/min', stroke: '#c62828', width: 2, scale: 'n' },
          { label: 'throughput', stroke: '#1f5f8b', dash: [6, 4], scale: 'thr', value: (u, v) => mibs(v) },
        ],
        axes: [timeAxis, axis('transfers', 'n', 3), axis('MiB/s', 'thr', 1)],
      }, [c[0], c[1], c[2], thr]];
    },
    // /ftsmon/optimizer/series: [[ts], [decision], [running], [thr B/s], [ema B/s],
    // [success %], [filesize avg], [filesize stddev]].
    'opt-throughput'(c) {
      return [{
        scales: { thr: {}, active: {} },
        series: [
          timeSeries,
          { label: 'throughput', stroke: '#1f5f8b', width: 2, scale: 'thr', value: (u, v) => mibs(v) },
          { label: 'EMA', stroke: '#8e24aa', width: 2, scale: 'thr', value: (u, v) => mibs(v) },
          { label: 'decision', stroke: '#ef6c00', width: 2, scale: 'active', paths: stepped() },
        ],
        axes: [timeAxis, axis('MiB/s', 'thr', 3), axis('decision', 'active', 1)],
      }, [c[0], c[3].map((v) => v / MIB), c[4].map((v) => v / MIB), c[1]]];
    },
    'opt-success'(c) {
      return [{
        scales: { pct: { range: [0, 100] }, active: {} },
        series: [
          timeSeries,
          { label: 'success', stroke: '#2e7d32', width: 2, scale: 'pct', value: (u, v) => (v == null ? '' : v.toFixed(1) + ' %') },
          { label: 'decision', stroke: '#ef6c00', width: 2, scale: 'active', paths: stepped() },
        ],
        axes: [timeAxis, axis('success %', 'pct', 3), axis('decision', 'active', 1)],
      }, [c[0], c[5], c[1]]];
    },
    'opt-filesize'(c) {
      const avg = c[6].map((v) => v / MIB);
      const hi = c[6].map((v, i) => (v + c[7][i]) / MIB);
      const lo = c[6].map((v, i) => Math.max(0, v - c[7][i]) / MIB);
      return [{
        scales: { size: {}, thr: {} },
        bands: [{ series: [2, 3], fill: 'rgba(31,95,139,0.15)' }],
        series: [
          timeSeries,
          { label: 'mean size', stroke: '#1f5f8b', width: 2, scale: 'size', value: (u, v) => (v == null ? '' : v.toFixed(1) + ' MiB') },
          { label: '+stddev', stroke: 'rgba(31,95,139,0.4)', scale: 'size' },
          { label: '-stddev', stroke: 'rgba(31,95,139,0.4)', scale: 'size' },
          { label: 'EMA', stroke: '#8e24aa', width: 2, scale: 'thr', value: (u, v) => mibs(v) },
        ],
        axes: [timeAxis, axis('MiB', 'size', 3), axis('EMA MiB/s', 'thr', 1)],
      }, [c[0], avg, hi, lo, c[4].map((v) => v / MIB)]];
    },
  };

  function note(el, text) {
    let p = el.querySelector('p.nodata');
    if (!p) {
      p = document.createElement('p');
      p.className = 'nodata';
      el.appendChild(p);
    }
    p.textContent = text;
  }

  async function load(el) {
    const r = await fetch(el.dataset.series, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(el.dataset.series + ': ' + r.status);
    return r.json();
  }

  async function draw(el) {
    const make = kinds[el.dataset.kind];
    if (!make) return;
    let cols;
    try {
      cols = await load(el);
    } catch (e) {
      note(el, 'The data of this plot could not be loaded.');
      return;
    }
    const [opts, data] = make(cols, el);
    if (!data[0].length) note(el, 'No data in the window.');
    if (el.plot) {
      el.plot.setData(data);
    } else {
      opts.width = Math.max(320, el.clientWidth - 8);
      opts.height = HEIGHT;
      opts.tzDate = utc;
      opts.legend = { live: true };
      el.plot = new uPlot(opts, data, el);
    }
    el.dataset.drawn = String(data[0].length);
  }

  function start() {
    const plots = document.querySelectorAll('figure.plot[data-series]');
    if (!plots.length || typeof uPlot === 'undefined') return;
    plots.forEach(draw);
    setInterval(() => plots.forEach(draw), PLOT_REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', start);
})();
