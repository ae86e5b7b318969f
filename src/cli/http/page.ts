/**
 * The live page (`--http`): per queue pair, packet and bit rates, drops and
 * ring fill as uPlot charts over the last two minutes, the negotiated
 * features and the active pair count; fed once a second by the server-sent
 * events of `/events` (see server.ts for the event's fields). uPlot is
 * served from node_modules (`/uplot.js`, `/uplot.css`): no network needed.
 */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>virtio-mq</title>
<link rel="stylesheet" href="/uplot.css">
<style>
  body { font: 14px system-ui, sans-serif; margin: 1em 2em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  .meta span { margin-right: 1.5em; }
  #features code { background: #eef; padding: 1px 4px; margin: 2px; display: inline-block; border-radius: 3px; font-size: 12px; }
  table { border-collapse: collapse; margin: .8em 0; }
  td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #ddd; }
  .charts { display: grid; grid-template-columns: repeat(2, 620px); gap: 10px; }
  .chart h2 { font-size: 1em; margin: .3em 0; }
</style>
</head>
<body>
<h1>virtio-mq <span id="kind"></span> (pid <span id="pid"></span>)</h1>
<div class="meta">
  <span>state: <b id="state">…</b></span>
  <span>active queue pairs: <b id="active-pairs">…</b> of <b id="pairs">…</b></span>
  <span>rings: <b id="ring-format">…</b></span>
  <span>uptime: <b id="uptime">…</b> s</span>
  <span>RX packets: <b id="rx-packets">0</b></span>
  <span>TX packets: <b id="tx-packets">0</b></span>
  <span>updates: <b id="updates">0</b></span>
</div>
<div id="features"></div>
<table id="pairs-table"><thead><tr><th>pair</th><th>RX pkt/s</th><th>TX pkt/s</th><th>RX Mbit/s</th><th>TX Mbit/s</th><th>drops</th><th>RX fill</th><th>TX fill</th></tr></thead><tbody></tbody></table>
<div class="charts">
  <div class="chart"><h2>packets/s</h2><div id="chart-pps"></div></div>
  <div class="chart"><h2>Mbit/s</h2><div id="chart-bps"></div></div>
  <div class="chart"><h2>drops/s</h2><div id="chart-drops"></div></div>
  <div class="chart"><h2>ring fill (%)</h2><div id="chart-fill"></div></div>
</div>
<script src="/uplot.js"></script>
<script>
const WINDOW = 120;
const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
let charts = null, data = null, updates = 0;
const $ = (id) => document.getElementById(id);
function series(pairs, dirs) {
  const s = [{}];
  for (let p = 0; p < pairs; p++) for (const d of dirs) s.push({ label: 'q' + p + (d ? ' ' + d : ''), stroke: colors[p % colors.length], dash: d === 'tx' ? [5, 3] : undefined, width: 1.5 });
  return s;
}
function makeCharts(pairs) {
  const opts = (s) => ({ width: 600, height: 220, series: s, axes: [{}, { size: 80 }], scales: { x: { time: true } } });
  const defs = { pps: ['rx', 'tx'], bps: ['rx', 'tx'], drops: [''], fill: ['rx', 'tx'] };
  charts = {}; data = {};
  for (const [k, dirs] of Object.entries(defs)) {
    const s = series(pairs, dirs);
    data[k] = s.map(() => []);
    charts[k] = new uPlot(opts(s), data[k], $('chart-' + k));
  }
}
function push(k, t, values) {
  const d = data[k];
  d[0].push(t);
  values.forEach((v, i) => d[i + 1].push(v));
  if (d[0].length > WINDOW) for (const a of d) a.shift();
  charts[k].setData(d);
}
function update(e) {
  if (!charts) makeCharts(e.pairs);
  const t = e.t / 1000;
  $('kind').textContent = e.kind; $('pid').textContent = e.pid; $('state').textContent = e.state;
  $('active-pairs').textContent = e.activePairs; $('pairs').textContent = e.pairs;
  $('ring-format').textContent = e.ringFormat || '—'; $('uptime').textContent = e.uptimeSeconds.toFixed(0);
  $('rx-packets').textContent = e.rxPackets; $('tx-packets').textContent = e.txPackets;
  $('updates').textContent = ++updates;
  $('features').innerHTML = e.features.map((f) => '<code>' + f + '</code>').join('');
  $('pairs-table').tBodies[0].innerHTML = e.per.map((q) => '<tr data-pair="' + q.pair + '"><td>' + q.pair + '</td><td>' + q.rxPps.toFixed(0) + '</td><td>' + q.txPps.toFixed(0) +
    '</td><td>' + (q.rxBps / 1e6).toFixed(1) + '</td><td>' + (q.txBps / 1e6).toFixed(1) + '</td><td>' + q.drops + '</td><td>' + (q.rxFill * 100).toFixed(0) + '%</td><td>' + (q.txFill * 100).toFixed(0) + '%</td></tr>').join('');
  push('pps', t, e.per.flatMap((q) => [q.rxPps, q.txPps]));
  push('bps', t, e.per.flatMap((q) => [q.rxBps / 1e6, q.txBps / 1e6]));
  push('drops', t, e.per.map((q) => q.dropsPerSecond));
  push('fill', t, e.per.flatMap((q) => [q.rxFill * 100, q.txFill * 100]));
}
const es = new EventSource('/events');
es.addEventListener('stats', (m) => update(JSON.parse(m.data)));
es.onerror = () => { $('state').textContent = 'disconnected (retrying)'; };
</script>
</body>
</html>
`;
