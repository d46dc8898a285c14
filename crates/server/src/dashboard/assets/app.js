// ringkv dashboard. Polls /dashboard/api/cluster (the member that served
// this page gathers every member's view) and draws the ring, the nodes,
// the shards, throughput and latency charts and recent events. Rates come
// from each member's counter samples (one a second, kept two minutes by the
// member), so they span real seconds of the member's clock however often
// this page polls, and a page just opened charts the last two minutes.
//
// For tests and scripts the body carries data-ready="true" once a view
// has been drawn, data-nodes / data-reachable / data-healthy / data-shards
// counts, data-leader (the leader's name, one shard) and data-errors (script
// errors, each also listed in #errors).
'use strict';

const POLL_MS = 1000;
// Seconds the charts span (the members keep as many samples).
const HISTORY_SECONDS = 120;
const SVG_NS = 'http://www.w3.org/2000/svg';

let scriptErrors = 0;

function recordError(message) {
  scriptErrors += 1;
  document.body.dataset.errors = String(scriptErrors);
  const list = document.getElementById('errors');
  const item = document.createElement('li');
  item.textContent = message;
  list.appendChild(item);
  list.hidden = false;
}

window.addEventListener('error', (e) => recordError(`${e.message} (${e.filename}:${e.lineno})`));
window.addEventListener('unhandledrejection', (e) => recordError(`unhandled: ${e.reason}`));

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k === 'title') node.title = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n) {
  if (!Number.isFinite(n) || n <= 0) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

function rate(n) {
  if (n === null || !Number.isFinite(n)) return '–';
  if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}

function millis(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return '–';
  const ms = seconds * 1000;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 1) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

function clock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}

function shortId(id) {
  return id ? id.slice(-6) : '–';
}

// The value below which a fraction q of the calls fell, interpolated in
// its bucket. counts has one more slot than bounds (past the last bound).
function percentile(bounds, counts, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const target = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i += 1) {
    if (counts[i] > 0 && seen + counts[i] >= target) {
      const lower = i === 0 ? 0 : bounds[i - 1];
      const upper = i < bounds.length ? bounds[i] : bounds[bounds.length - 1] * 2;
      return lower + (upper - lower) * ((target - seen) / counts[i]);
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1];
}

// ---------------------------------------------------------------- rates

// Rates between two counter samples of one member; null where the counters
// went back (the member restarted) or no time passed.
function between(before, after) {
  const dt = (after.at_unix_ms - before.at_unix_ms) / 1000;
  if (dt <= 0 || after.grpc_unary_calls < before.grpc_unary_calls) return null;
  return {
    second: Math.round(after.at_unix_ms / 1000),
    ops: (after.grpc_unary_calls - before.grpc_unary_calls) / dt,
    writes: Math.max(0, after.proposals_submitted - before.proposals_submitted) / dt,
    cpu: Math.max(0, after.cpu_seconds - before.cpu_seconds) / dt,
    buckets: after.latency_buckets.map((c, i) => Math.max(0, c - (before.latency_buckets[i] || 0))),
  };
}

// A member's rates over its last sampled second (the table's figures).
function latestRates(view) {
  const h = view.history;
  return h.length >= 2 ? between(h[h.length - 2], h[h.length - 1]) : null;
}

// The cluster's series, one point per second of the last HISTORY_SECONDS:
// every member's rates summed by the second they end in.
function clusterSeries(cluster) {
  const bySecond = new Map();
  let bounds = null;
  for (const n of cluster.nodes) {
    if (!n.view) continue;
    bounds = n.view.metrics.latency_bounds_seconds;
    const h = n.view.history;
    const seen = new Set();
    for (let i = 1; i < h.length; i += 1) {
      const r = between(h[i - 1], h[i]);
      // Two samples rounding to one second (timer jitter) count once.
      if (!r || seen.has(r.second)) continue;
      seen.add(r.second);
      const slot = bySecond.get(r.second) || { ops: 0, writes: 0, buckets: r.buckets.map(() => 0) };
      slot.ops += r.ops;
      slot.writes += r.writes;
      r.buckets.forEach((c, j) => { slot.buckets[j] += c; });
      bySecond.set(r.second, slot);
    }
  }
  const now = Math.round(cluster.now_unix_ms / 1000);
  const series = { ops: [], writes: [], p50: [], p99: [], points: bySecond.size };
  for (let second = now - HISTORY_SECONDS + 1; second <= now; second += 1) {
    const slot = bySecond.get(second);
    series.ops.push(slot ? slot.ops : null);
    series.writes.push(slot ? slot.writes : null);
    series.p50.push(slot && bounds ? percentile(bounds, slot.buckets, 0.5) : null);
    series.p99.push(slot && bounds ? percentile(bounds, slot.buckets, 0.99) : null);
  }
  return series;
}

// ---------------------------------------------------------------- ring

function polar(cx, cy, r, turn) {
  const a = turn * 2 * Math.PI - Math.PI / 2;
  return [cx + r * Math.cos(a), cy + r * Math.sin(a)];
}

function arcPath(cx, cy, r, from, to) {
  const [x1, y1] = polar(cx, cy, r, from);
  const [x2, y2] = polar(cx, cy, r, to);
  const large = to - from > 0.5 ? 1 : 0;
  return `M ${x1} ${y1} A ${r} ${r} 0 ${large} 1 ${x2} ${y2}`;
}

function shardColor(shard, count) {
  const hue = (200 + ((shard - 1) * 360) / Math.max(count, 1)) % 360;
  return `hsl(${hue}, 70%, 60%)`;
}

function nodeClass(node) {
  if (!node.reachable) return 'gone';
  return node.view.healthy ? 'ok' : 'bad';
}

// The point of a shard's arc nearest to a node's angle: where its spoke
// starts.
function nearestOnArc(arc, turn) {
  const [from, to] = arc;
  if (to - from >= 1) return turn;
  if (turn >= from && turn <= to) return turn;
  const dist = (a, b) => Math.min(Math.abs(a - b), 1 - Math.abs(a - b));
  return dist(turn, from) < dist(turn, to) ? from : to;
}

function drawRing(cluster, shards, names) {
  const root = document.getElementById('ring');
  root.replaceChildren();
  const cx = 210;
  const cy = 210;
  const ringR = 112;
  const nodeR = 172;
  const nodes = cluster.nodes;
  const turns = new Map(nodes.map((n, i) => [n.id, nodes.length ? i / nodes.length : 0]));

  root.append(svg('circle', { cx, cy, r: ringR, fill: 'none', stroke: '#26313d', 'stroke-width': 26 }));

  // Spokes first, under the arcs and nodes.
  for (const s of shards) {
    const replicas = [
      ...s.voters.map((id) => [id, id === s.leader ? 'leader' : 'follower']),
      ...s.learners.map((id) => [id, 'learner']),
    ];
    for (const [id, role] of replicas) {
      if (!turns.has(id)) continue;
      const t = turns.get(id);
      const [x1, y1] = polar(cx, cy, ringR + 13, nearestOnArc(s.keyspace, t));
      const [x2, y2] = polar(cx, cy, nodeR - 20, t);
      const line = svg('line', {
        x1, y1, x2, y2,
        stroke: role === 'leader' ? '#f5c451' : role === 'learner' ? '#d98cf2' : '#5fb3f9',
        'stroke-width': role === 'leader' ? 3.5 : 1.6,
        'stroke-dasharray': role === 'leader' ? '' : role === 'learner' ? '2 4' : '6 4',
        'stroke-linecap': 'round',
        // With many shards the followers' spokes would hide the leaders'.
        'stroke-opacity': role === 'leader' || cluster.shard_count <= 2 ? 1 : 0.45,
      });
      line.append(svg('title', {}, `shard ${s.shard}: ${names(id)} (${role})`));
      root.append(line);
    }
  }

  for (const s of shards) {
    const color = shardColor(s.shard, cluster.shard_count);
    const [from, to] = s.keyspace;
    const gap = cluster.shard_count > 1 ? 0.004 : 0;
    const shape = to - from >= 1
      ? svg('circle', { cx, cy, r: ringR, fill: 'none', stroke: color, 'stroke-width': 22 })
      : svg('path', { d: arcPath(cx, cy, ringR, from + gap, to - gap), fill: 'none', stroke: color, 'stroke-width': 22 });
    shape.append(svg('title', {}, `shard ${s.shard}: keys hashing to [${from.toFixed(3)}, ${to.toFixed(3)}) of the circle; leader ${names(s.leader)}, term ${s.term}`));
    root.append(shape);
    const mid = to - from >= 1 ? 0 : (from + to) / 2;
    const [lx, ly] = polar(cx, cy, ringR, mid);
    root.append(svg('text', { x: lx, y: ly + 4, 'text-anchor': 'middle', 'font-size': 11, 'font-weight': 700, fill: '#0f1419' }, String(s.shard)));
  }

  const shardWord = cluster.shard_count === 1 ? 'shard' : 'shards';
  root.append(svg('text', { x: cx, y: cy - 6, 'text-anchor': 'middle', 'font-size': 22, 'font-weight': 700 }, `${cluster.shard_count} ${shardWord}`));
  root.append(svg('text', { x: cx, y: cy + 16, 'text-anchor': 'middle', 'font-size': 12, class: 'muted' }, `${nodes.length} nodes · key-hash ring`));

  const leaders = new Set(shards.map((s) => s.leader).filter(Boolean));
  for (const n of nodes) {
    const t = turns.get(n.id);
    const [x, y] = polar(cx, cy, nodeR, t);
    const g = svg('g', { class: `node node-${nodeClass(n)}`, 'data-id': n.id });
    const fill = { ok: '#3ecf8e', bad: '#f0616d', gone: '#6b7785' }[nodeClass(n)];
    g.append(svg('circle', { cx: x, cy: y, r: 19, fill: '#171e26', stroke: fill, 'stroke-width': 3 }));
    if (leaders.has(n.id)) {
      g.append(svg('circle', { cx: x, cy: y, r: 24, fill: 'none', stroke: '#f5c451', 'stroke-width': 1.5, 'stroke-dasharray': '3 3' }));
    }
    g.append(svg('text', { x, y: y + 4, 'text-anchor': 'middle', 'font-size': 12, 'font-weight': 700 }, n.name || shortId(n.id)));
    const below = y > cy ? 38 : -30;
    const led = shards.filter((s) => s.leader === n.id).length;
    const label = !n.reachable ? 'unreachable' : led ? `leads ${led}` : 'follower';
    g.append(svg('text', { x, y: y + below, 'text-anchor': 'middle', 'font-size': 11, class: 'muted' }, label));
    g.append(svg('title', {}, `${n.name} ${n.id}${n.url ? ` at ${n.url}` : ''}${n.error ? `: ${n.error}` : ''}`));
    root.append(g);
  }
}

// ---------------------------------------------------------------- charts

// The smallest round maximum at or above v whose quarters are round too.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart(id, series, format) {
  const root = document.getElementById(id);
  root.replaceChildren();
  const w = 600;
  const h = 190;
  const left = 52;
  const right = 10;
  const top = 22;
  const bottom = 20;
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const max = niceMax(values.length ? Math.max(...values) : 0);
  for (let i = 0; i <= 4; i += 1) {
    const y = top + ((h - top - bottom) * i) / 4;
    root.append(svg('line', { x1: left, x2: w - right, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: left - 6, y: y + 3, 'text-anchor': 'end', class: 'axis' }, format((max * (4 - i)) / 4)));
  }
  root.append(svg('text', { x: left, y: h - 4, class: 'axis' }, `${HISTORY_SECONDS} s ago`));
  root.append(svg('text', { x: w - right, y: h - 4, 'text-anchor': 'end', class: 'axis' }, 'now'));
  const step = (w - left - right) / (HISTORY_SECONDS - 1);
  const offset = HISTORY_SECONDS - Math.max(...series.map((s) => s.values.length), 0);
  let legendX = left;
  for (const s of series) {
    let d = '';
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) return;
      const x = left + (offset + i) * step;
      const y = top + (h - top - bottom) * (1 - v / max);
      const prev = s.values[i - 1];
      d += `${d && prev !== null && prev !== undefined && Number.isFinite(prev) ? 'L' : 'M'} ${x.toFixed(1)} ${y.toFixed(1)} `;
    });
    if (d) root.append(svg('path', { d, class: 'series', stroke: s.color }));
    // A sample between two gaps draws no segment: mark it.
    const ok = (v) => v !== null && v !== undefined && Number.isFinite(v);
    s.values.forEach((v, i) => {
      if (!ok(v) || ok(s.values[i - 1]) || ok(s.values[i + 1])) return;
      const x = left + (offset + i) * step;
      const y = top + (h - top - bottom) * (1 - v / max);
      root.append(svg('circle', { cx: x, cy: y, r: 2.5, fill: s.color }));
    });
    root.append(svg('rect', { x: legendX, y: 6, width: 10, height: 3, fill: s.color }));
    const last = [...s.values].reverse().find((v) => v !== null && Number.isFinite(v));
    const text = `${s.name} ${last === undefined ? '–' : format(last)}`;
    root.append(svg('text', { x: legendX + 14, y: 11, class: 'legend-text' }, text));
    legendX += 24 + text.length * 6.2;
  }
  if (!values.length) {
    root.append(svg('text', { x: (w + left) / 2, y: h / 2 + 4, 'text-anchor': 'middle', class: 'empty' }, 'no request in the last two minutes'));
  }
}

// ---------------------------------------------------------------- tables

function drawNodes(cluster, shardsById) {
  const body = document.querySelector('#nodes tbody');
  body.replaceChildren();
  for (const n of cluster.nodes) {
    const v = n.view;
    const r = v ? latestRates(v) : null;
    const cls = nodeClass(n);
    const healthText = cls === 'ok' ? 'healthy' : cls === 'bad' ? v.health_reason || 'unhealthy' : 'unreachable';
    const roles = v ? v.shards.map((s) => s.role) : [];
    const leads = roles.filter((x) => x === 'leader').length;
    const role = !v ? '–' : shardsById.size <= 1 ? (roles[0] || '–') : `leads ${leads} of ${roles.length}`;
    const first = v && v.shards[0];
    const lag = first ? first.commit_index - first.applied_index : null;
    const p99 = r ? percentile(v.metrics.latency_bounds_seconds, r.buckets, 0.99) : null;
    const row = el('tr', { 'data-id': n.id, class: `node-row node-${cls}` },
      el('td', {}, n.name || '(starting)', el('span', { class: 'sub' }, shortId(n.id))),
      el('td', { class: `health-${cls}`, title: n.error || '' }, healthText),
      el('td', { class: `role-${role}` }, role),
      el('td', { class: 'num' }, first ? first.term : '–'),
      el('td', { class: 'num' }, first ? first.applied_index : '–'),
      el('td', { class: 'num' }, lag === null ? '–' : lag),
      el('td', { class: 'num' }, r ? rate(r.ops) : '–'),
      el('td', { class: 'num' }, millis(p99)),
      el('td', { class: 'num' }, v ? bytes(v.metrics.resident_memory_bytes) : '–'),
      el('td', { class: 'num' }, r ? `${(r.cpu * 100).toFixed(0)}%` : '–'),
      el('td', { class: 'num' }, v ? bytes(v.metrics.data_dir_bytes) : '–'));
    body.append(row);
  }
}

function drawShards(shards, names) {
  const body = document.querySelector('#shards tbody');
  body.replaceChildren();
  for (const s of shards) {
    const replicas = [
      ...s.voters.map((id) => (id === s.leader ? `${names(id)}★` : names(id))),
      ...s.learners.map((id) => `${names(id)} (learner)`),
    ].join(', ');
    body.append(el('tr', { 'data-shard': s.shard },
      el('td', {}, s.shard),
      el('td', { class: 'role-leader' }, s.leader ? names(s.leader) : 'none'),
      el('td', { class: 'num' }, s.term),
      el('td', { class: 'num' }, s.commit_index),
      el('td', { class: 'num' }, s.applied_index),
      el('td', {}, replicas)));
  }
}

function describe(e, names) {
  switch (e.kind) {
    case 'leader_elected':
      return ['kind-leader', `${names(e.leader)} became leader${e.previous ? ` (was ${names(e.previous)})` : ''}`];
    case 'leader_lost':
      return ['kind-lost', `leader ${names(e.previous)} lost`];
    case 'replica_added':
      return ['kind-move', `${names(e.node)} became a voting replica`];
    case 'learner_added':
      return ['kind-move', `${names(e.node)} added as a learner (catching up)`];
    case 'replica_removed':
      return ['kind-move', `${names(e.node)} removed`];
    default:
      return ['', e.kind];
  }
}

function drawEvents(events, names) {
  const list = document.getElementById('events');
  list.replaceChildren();
  if (!events.length) {
    list.append(el('li', { class: 'none' }, 'no leader change or move seen yet'));
    return;
  }
  for (const e of [...events].reverse()) {
    const [cls, text] = describe(e, names);
    list.append(el('li', {},
      el('time', {}, clock(e.at_unix_ms)),
      el('span', { class: 'mono' }, `shard ${e.shard}`),
      el('span', { class: 'mono' }, `term ${e.term}`),
      el('span', { class: cls }, text)));
  }
}

// ---------------------------------------------------------------- render

// One row per shard: the leader's view of it where the leader answered,
// else the most advanced view.
function mergeShards(cluster) {
  const byId = new Map();
  for (const n of cluster.nodes) {
    if (!n.view) continue;
    for (const s of n.view.shards) {
      const seen = byId.get(s.shard);
      const better = !seen
        || (s.role === 'leader' && seen.role !== 'leader')
        || (seen.role !== 'leader' && s.applied_index > seen.applied_index);
      if (better) byId.set(s.shard, s);
    }
  }
  return byId;
}

function render(cluster) {
  const names = (id) => {
    if (!id) return 'none';
    const n = cluster.nodes.find((x) => x.id === id);
    return n && n.name ? n.name : shortId(id);
  };
  const shardsById = mergeShards(cluster);
  const shards = [...shardsById.values()].sort((a, b) => a.shard - b.shard);

  const series = clusterSeries(cluster);

  const via = cluster.nodes.find((n) => n.id === cluster.via);
  const viaView = via && via.view;
  document.getElementById('cluster-id').textContent = cluster.cluster_id;
  document.getElementById('engine').textContent = viaView ? viaView.engine : '–';
  document.getElementById('version').textContent = viaView ? viaView.version : '–';
  document.getElementById('via').textContent = via ? via.name || shortId(via.id) : shortId(cluster.via);

  const reachable = cluster.nodes.filter((n) => n.reachable).length;
  const healthy = cluster.nodes.filter((n) => n.reachable && n.view.healthy).length;
  const status = document.getElementById('status');
  const allWell = healthy === cluster.nodes.length;
  status.className = `pill ${allWell ? 'pill-ok' : 'pill-bad'}`;
  status.textContent = `${healthy}/${cluster.nodes.length} nodes healthy`;
  document.getElementById('nodes-summary').textContent =
    `${reachable} reachable · updated ${clock(cluster.now_unix_ms)}`;

  drawRing(cluster, shards, names);
  drawNodes(cluster, shardsById);
  drawShards(shards, names);
  drawChart('throughput', [
    { name: 'requests/s', color: '#5fb3f9', values: series.ops },
    { name: 'writes/s', color: '#3ecf8e', values: series.writes },
  ], rate);
  drawChart('latency', [
    { name: 'p50', color: '#3ecf8e', values: series.p50 },
    { name: 'p99', color: '#f5c451', values: series.p99 },
  ], millis);
  drawEvents(cluster.events, names);

  const data = document.body.dataset;
  data.nodes = String(cluster.nodes.length);
  data.reachable = String(reachable);
  data.healthy = String(healthy);
  data.shards = String(shards.length);
  data.leader = shards.length === 1 && shards[0].leader ? names(shards[0].leader) : '';
  data.samples = String(series.points);
  data.ready = 'true';
}

async function poll() {
  let cluster = null;
  try {
    const response = await fetch('/dashboard/api/cluster', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    cluster = await response.json();
  } catch (e) {
    // The member is down or restarting: say so, and keep polling.
    const status = document.getElementById('status');
    status.className = 'pill pill-bad';
    status.textContent = `cannot reach the member: ${e.message}`;
  }
  try {
    if (cluster) render(cluster);
  } catch (e) {
    recordError(`render failed: ${e && e.stack ? e.stack : e}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
