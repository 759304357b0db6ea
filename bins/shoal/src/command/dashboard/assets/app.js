// The Shoal dashboard: one page, no framework, no build step. It keeps a copy of the cluster
// from the server's event stream (`reset` with everything, then `delta` with changes) and draws
// the page that the location's hash names, again at most once per animation frame when
// something changed. Every text from the cluster goes into the page as text, never as markup.
'use strict';

const store = {
  nodes: new Map(), services: new Map(), tasks: new Map(), networks: new Map(),
  events: [], status: null, loaded: false, streamUp: false,
};
const KINDS = ['nodes', 'services', 'tasks', 'networks'];
const KEPT_EVENTS = 500;
// A failed task stays on the grid (red) this long after it ended.
const FAILED_SHOWN_MS = 5 * 60 * 1000;

// ----- building the page -----

// h('td', {class: 'num'}, 'text', child, [children]): an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'vars') for (const [name, v] of Object.entries(value)) el.style.setProperty(name, v);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function short(id) { return (id || '').slice(0, 12); }

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

function bytes(n) {
  if (!n) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

function time(ms) { return ms ? new Date(ms).toLocaleString() : ''; }

// The colour class of a task state: the state is always written next to it as well.
function stateClass(state) {
  switch (state) {
    case 'running': return 'st-running';
    case 'failed': case 'rejected': case 'orphaned': return 'st-failed';
    case 'complete': case 'shutdown': case 'remove': return 'st-stopped';
    default: return 'st-pending';
  }
}

function serviceColour(id) {
  let hash = 0;
  for (const c of id || '') hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 65% 45%)`;
}

// A class per service that sets its colour, in a stylesheet of the page's own making (CSSOM,
// which the content security policy allows): cards of one service share their style, where an
// inline style on each of 10,000 cards would make the browser work out each one's alone.
const serviceSheet = new CSSStyleSheet();
document.adoptedStyleSheets = [...document.adoptedStyleSheets, serviceSheet];
const serviceClasses = new Map();
function serviceClass(id) {
  let name = serviceClasses.get(id);
  if (!name) {
    name = `svc-${serviceClasses.size}`;
    serviceClasses.set(id, name);
    serviceSheet.insertRule(`.${name} { --svc: ${serviceColour(id)}; }`, serviceSheet.cssRules.length);
  }
  return name;
}

const LIVE_DESIRED = new Set(['new', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting', 'running']);
function isLive(task) { return LIVE_DESIRED.has(task.desired); }

function serviceName(id) { const s = store.services.get(id); return s ? s.name : short(id); }
function nodeName(id) { const n = store.nodes.get(id); return n ? n.name : short(id); }
function taskName(task) { return task.name || `${serviceName(task.service)}.${task.slot || short(task.node)}`; }
function byName(a, b) { return (a.name || '').localeCompare(b.name || '') || a.id.localeCompare(b.id); }

// Running and desired tasks of each service, and how many run its current spec.
function serviceCounts() {
  const counts = new Map();
  for (const s of store.services.values()) counts.set(s.id, { running: 0, live: 0, current: 0 });
  for (const t of store.tasks.values()) {
    const c = counts.get(t.service);
    if (!c || !isLive(t)) continue;
    c.live++;
    if (t.state === 'running') c.running++;
    // Up to date with the service as the manager's updater counts it (not by spec version: a
    // scale changes that without replacing any task).
    if (t.current && t.state === 'running') c.current++;
  }
  return counts;
}

function desiredOf(service, counts) {
  return service.replicas === null || service.replicas === undefined ? counts.live : service.replicas;
}

// ----- pages -----

// The grid's task cards of the last draw, by task ID: { key (what it shows), el }.
let gridCards = new Map();

function gridPage() {
  const now = Date.now();
  const columns = new Map();
  const unassigned = [];
  for (const task of store.tasks.values()) {
    const failedRecently = stateClass(task.state) === 'st-failed' && now - (task.since || 0) < FAILED_SHOWN_MS;
    if (!(isLive(task) || failedRecently)) continue;
    if (!task.node) { unassigned.push(task); continue; }
    if (!columns.has(task.node)) columns.set(task.node, []);
    columns.get(task.node).push(task);
  }
  // By service name, slot, then age: the names ranked once, so that sorting compares numbers.
  const rank = new Map([...store.services.values()].sort(byName).map((s, i) => [s.id, i]));
  const rankOf = (t) => (rank.has(t.service) ? rank.get(t.service) : -1);
  const order = (a, b) => rankOf(a) - rankOf(b) || a.slot - b.slot || (a.since || 0) - (b.since || 0);
  // A card is made again only when what it shows changed: a redraw of 10,000 tasks after a few
  // changed moves the other cards instead of building them anew.
  const fresh = new Map();
  const card = (task) => {
    const name = taskName(task);
    const title = `${name}: ${task.state}${task.error ? ` (${task.error})` : ''}, ${task.image}`;
    const key = `${task.state}\u0000${title}\u0000${task.service}`;
    const kept = gridCards.get(task.id);
    const el = kept && kept.key === key ? kept.el : h('li', {
      class: `task ${stateClass(task.state)} ${serviceClass(task.service)}`,
      'data-task': task.id, 'data-state': task.state, title,
    }, h('span', { class: 'name' }, name), h('span', { class: 'state' }, task.state));
    fresh.set(task.id, { key, el });
    return el;
  };
  const nodes = [...store.nodes.values()].sort((a, b) =>
    (a.role === b.role ? 0 : a.role === 'manager' ? -1 : 1) || byName(a, b));
  const column = (node) => {
    const tasks = (columns.get(node.id) || []).sort(order);
    const running = tasks.filter((t) => t.state === 'running').length;
    return h('section', {
      class: `node ${node.state} ${node.availability}`, tabindex: 0, 'data-node': node.id, 'data-key': `node-${node.id}`,
      'aria-label': `node ${node.name}: ${node.role}${node.leader ? ' (leader)' : ''}, ${node.state}, ${node.availability}, ` +
        `${running} of ${tasks.length} tasks running`,
    },
    h('h3', {}, node.name, node.leader ? ' ★' : '',
      h('small', {}, `${node.role}${node.leader ? ' · leader' : ''} · ${node.state} · ${node.availability}`)),
    h('ul', { 'aria-label': `tasks on ${node.name}` }, tasks.map(card)));
  };
  const legend = h('ul', { class: 'legend', 'aria-label': 'legend' },
    ['running', 'starting', 'failed', 'shutdown'].map((s) => h('li', {}, h('span', { class: `badge ${stateClass(s)}` }, s))),
    h('li', {}, 'the left bar is the service’s colour'));
  const sections = nodes.map(column);
  if (unassigned.length) {
    sections.push(h('section', { class: 'node', tabindex: 0, 'aria-label': `${unassigned.length} tasks not on a node` },
      h('h3', {}, 'not scheduled', h('small', {}, 'waiting for a node')),
      h('ul', {}, unassigned.sort(order).map(card))));
  }
  gridCards = fresh;
  return [h('h2', {}, 'Nodes and their tasks'), legend,
    nodes.length ? h('div', { class: 'grid' }, sections) : h('p', { class: 'empty' }, 'No nodes.')];
}

function updateCell(service, counts) {
  const u = service.update;
  if (!u) return '';
  const desired = desiredOf(service, counts);
  const active = u.state === 'updating' || u.state === 'rollback_started';
  const pct = desired ? Math.round((100 * counts.current) / desired) : 100;
  return h('span', {},
    active ? h('span', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': desired,
      'aria-valuenow': counts.current, 'aria-label': `${counts.current} of ${desired} tasks updated`, vars: { '--done': `${pct}%` } },
    h('span', {})) : null,
    u.state.replace('_', ' '), active ? ` ${counts.current}/${desired}` : '',
    u.message ? h('div', { class: 'muted' }, u.message) : null);
}

function serviceActions(service) {
  return h('span', { class: 'actions' },
    service.mode === 'replicated'
      ? h('button', { type: 'button', 'data-key': `scale-${service.id}`, 'data-action': 'scale',
        onclick: () => scale(service.id) }, 'Scale…') : null,
    service.canRollback
      ? h('button', { type: 'button', class: 'danger', 'data-key': `rollback-${service.id}`, 'data-action': 'rollback',
        onclick: () => rollback(service.id) }, 'Roll back…') : null);
}

function servicesPage() {
  const counts = serviceCounts();
  const services = [...store.services.values()].sort(byName);
  if (!services.length) return [h('h2', {}, 'Services'), h('p', { class: 'empty' }, 'No services.')];
  return [h('h2', {}, 'Services'), h('table', {},
    h('thead', {}, h('tr', {}, ['Name', 'Mode', 'Replicas', 'Image', 'Ports', 'Update', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, services.map((s) => {
      const c = counts.get(s.id);
      const desired = desiredOf(s, c);
      return h('tr', { 'data-service': s.id },
        h('td', {}, h('a', { href: `#/service/${s.id}`, 'data-key': `svc-${s.id}` }, s.name),
          s.error ? h('div', { class: 'error' }, `blocked: ${s.error}`) : null),
        h('td', {}, s.mode.replace('-', ' ')),
        h('td', { class: `num ${c.running < desired ? 'error' : ''}`, 'data-replicas': `${c.running}/${desired}` }, `${c.running}/${desired}`),
        h('td', { class: 'mono' }, s.image),
        h('td', { class: 'mono' }, s.ports),
        h('td', {}, updateCell(s, c)),
        h('td', {}, serviceActions(s)));
    })))];
}

function servicePage(id) {
  const s = store.services.get(id);
  if (!s) return [h('h2', {}, 'Service'), h('p', { class: 'empty' }, `No service ${short(id)}: it was removed, or is not loaded yet.`)];
  const c = serviceCounts().get(id);
  const networks = (list) => list.map((n) => (store.networks.get(n) || { name: short(n) }).name).join(', ');
  const facts = [
    ['ID', h('code', {}, s.id)], ['Mode', s.mode.replace('-', ' ')], ['Replicas', `${c.running}/${desiredOf(s, c)} running`],
    ['Image', h('code', {}, s.image)], ['Ports', s.ports || '—'], ['Networks', networks(s.networks) || '—'],
    ['Virtual IPs', s.vips.map((v) => `${v.addr} on ${networks([v.network])}`).join(', ') || '—'],
    ['Update', updateCell(s, c) || '—'], ['Stack', s.stack || '—'],
    ['Labels', Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '—'],
    ['Created', time(s.created)], ['Updated', time(s.updated)],
  ];
  if (s.error) facts.push(['Blocked', h('span', { class: 'error' }, s.error)]);
  // As `service ps`: per slot (per node for global services), the live task first, then history.
  const groups = new Map();
  for (const t of store.tasks.values()) {
    if (t.service !== id) continue;
    const key = t.slot ? `slot ${t.slot}` : `node ${t.node}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(t);
  }
  const rows = [];
  const keys = [...groups.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  for (const key of keys) {
    const tasks = groups.get(key).sort((a, b) => (isLive(b) - isLive(a)) || (b.since || 0) - (a.since || 0));
    tasks.forEach((t, i) => rows.push(h('tr', { class: i ? 'history' : '', 'data-task': t.id },
      h('td', { class: 'mono' }, short(t.id)),
      h('td', {}, i ? `\\_ ${taskName(t)}` : taskName(t)),
      h('td', {}, t.node ? nodeName(t.node) : '—'),
      h('td', {}, t.desired),
      h('td', {}, h('span', { class: `badge ${stateClass(t.state)}` }, t.state), ' ', h('span', { class: 'muted' }, ago(t.since))),
      h('td', { class: t.error ? 'error' : '' }, t.error || t.message))));
  }
  return [h('h2', {}, `Service ${s.name}`), h('p', {}, serviceActions(s)), h('dl', { class: 'facts' },
    facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
  h('h2', {}, 'Tasks'),
  rows.length ? h('table', {}, h('thead', {}, h('tr', {},
    ['ID', 'Name', 'Node', 'Desired', 'Current state', 'Error or message'].map((c) => h('th', { scope: 'col' }, c)))),
  h('tbody', {}, rows)) : h('p', { class: 'empty' }, 'No tasks.')];
}

function nodesPage() {
  const running = new Map();
  for (const t of store.tasks.values()) {
    if (t.state === 'running' && isLive(t)) running.set(t.node, (running.get(t.node) || 0) + 1);
  }
  const nodes = [...store.nodes.values()].sort(byName);
  return [h('h2', {}, 'Nodes'), h('table', {},
    h('thead', {}, h('tr', {}, ['Hostname', 'ID', 'Role', 'Status', 'Availability', 'Address', 'Resources', 'Engine',
      'Load balancer', 'Labels', 'Tasks', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, nodes.map((n) => h('tr', { 'data-node': n.id },
      h('td', {}, n.name),
      h('td', { class: 'mono' }, short(n.id)),
      h('td', {}, n.role, n.leader ? ' (leader)' : n.reachability ? ` (${n.reachability})` : ''),
      h('td', { class: n.state === 'ready' ? '' : 'error' }, n.state, n.message ? h('div', { class: 'muted' }, n.message) : null),
      h('td', { 'data-availability': n.availability }, n.availability),
      h('td', { class: 'mono' }, n.addr),
      h('td', {}, n.cpus ? `${n.cpus} CPUs, ${bytes(n.memory)}` : ''),
      h('td', {}, n.engine, n.platform ? h('div', { class: 'muted' }, n.platform) : null),
      h('td', {}, n.lb),
      h('td', {}, Object.entries(n.labels).map(([k, v]) => h('div', { class: 'mono' }, `${k}=${v}`))),
      h('td', { class: 'num' }, running.get(n.id) || 0),
      h('td', {}, h('span', { class: 'actions' },
        n.availability !== 'drain' ? h('button', { type: 'button', class: 'danger', 'data-action': 'drain',
          'data-key': `drain-${n.id}`, onclick: () => setAvailability(n.id, 'drain') }, 'Drain…') : null,
        n.availability !== 'active' ? h('button', { type: 'button', 'data-action': 'activate',
          'data-key': `activate-${n.id}`, onclick: () => setAvailability(n.id, 'active') }, 'Activate…') : null,
        n.availability === 'active' ? h('button', { type: 'button', 'data-action': 'pause',
          'data-key': `pause-${n.id}`, onclick: () => setAvailability(n.id, 'pause') }, 'Pause…') : null))))))];
}

function networksPage() {
  const services = new Map();
  const nodes = new Map();
  for (const s of store.services.values()) {
    for (const n of new Set([...s.networks, ...s.vips.map((v) => v.network)])) {
      if (!services.has(n)) services.set(n, new Set());
      services.get(n).add(s.name);
    }
  }
  for (const t of store.tasks.values()) {
    if (!isLive(t) || !t.node) continue;
    for (const a of t.networks) {
      if (!nodes.has(a.network)) nodes.set(a.network, new Set());
      nodes.get(a.network).add(nodeName(t.node));
    }
  }
  const list = (set) => (set ? [...set].sort().join(', ') : '—');
  const networks = [...store.networks.values()].sort(byName);
  return [h('h2', {}, 'Networks'), h('table', {},
    h('thead', {}, h('tr', {}, ['Name', 'ID', 'Driver', 'Subnet', 'Gateway', 'VNI', 'Options', 'Services', 'Nodes']
      .map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, networks.map((n) => h('tr', { 'data-network': n.id },
      h('td', {}, n.name, n.error ? h('div', { class: 'error' }, n.error) : null),
      h('td', { class: 'mono' }, short(n.id)),
      h('td', {}, n.driver),
      h('td', { class: 'mono' }, n.subnet), h('td', { class: 'mono' }, n.gateway),
      h('td', { class: 'num' }, n.vni || ''),
      h('td', {}, [n.ingress && 'ingress', n.internal && 'internal', n.attachable && 'attachable'].filter(Boolean).join(', ')),
      h('td', {}, list(services.get(n.id))),
      h('td', {}, list(nodes.get(n.id)))))))];
}

function eventsPage() {
  const events = store.events.slice().reverse();
  return [h('h2', {}, 'Events'), events.length ? h('table', {},
    h('thead', {}, h('tr', {}, ['Time', 'Type', 'Action', 'Object', 'Changes'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, events.map((e) => {
      const attrs = Object.entries(e.attributes).filter(([k]) => k !== 'name');
      return h('tr', {},
        h('td', {}, time(e.time)), h('td', {}, e.type), h('td', {}, e.action),
        h('td', {}, e.attributes.name || '', ' ', h('code', { class: 'muted' }, short(e.id))),
        h('td', { class: 'mono' }, attrs.map(([k, v]) => `${k}=${v}`).join(', ')));
    }))) : h('p', { class: 'empty' }, 'No events since the dashboard started.')];
}

// ----- drawing -----

// The page the hash names (`#/service/ID`); a hash that names no page (the skip link's
// `#main`) keeps the last one.
let lastRoute = { page: 'grid', id: undefined };
function route() {
  if (location.hash && !location.hash.startsWith('#/')) return lastRoute;
  const [page, id] = (location.hash.replace(/^#\/?/, '') || 'grid').split('/');
  let decoded = id;
  try { decoded = id && decodeURIComponent(id); } catch (_) { /* a malformed ID shows as not found */ }
  lastRoute = { page, id: decoded };
  return lastRoute;
}

function draw() {
  const started = performance.now();
  const { page, id } = route();
  for (const a of document.querySelectorAll('nav a')) {
    const current = a.dataset.page === page || (page === 'service' && a.dataset.page === 'services');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  let content;
  if (!store.loaded) content = h('p', { class: 'empty' }, 'Loading the cluster…');
  else if (page === 'services') content = servicesPage();
  else if (page === 'service') content = servicePage(id);
  else if (page === 'nodes') content = nodesPage();
  else if (page === 'networks') content = networksPage();
  else if (page === 'events') content = eventsPage();
  else content = gridPage();
  const grid = main.querySelector('.grid');
  const scrolled = grid ? grid.scrollLeft : 0;
  main.replaceChildren(...[content].flat());
  const newGrid = main.querySelector('.grid');
  if (newGrid && scrolled) newGrid.scrollLeft = scrolled;
  if (focused) {
    const again = main.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  const live = [...store.tasks.values()].filter(isLive);
  document.getElementById('summary').textContent = store.loaded
    ? `${store.nodes.size} nodes · ${store.services.size} services · ${live.filter((t) => t.state === 'running').length}/${live.length} tasks running`
    : '';
  drawLink();
  // How long each draw takes, for the benchmark (`performance.getEntriesByName('shoal-draw')`);
  // the browser keeps such entries for ever, so a page open for days keeps the last thousand.
  if (store.loaded) {
    if (++draw.count % 1000 === 0) performance.clearMeasures('shoal-draw');
    performance.measure('shoal-draw', { start: started });
  }
  if (store.loaded && !draw.marked) {
    draw.marked = true;
    performance.mark('shoal-first-render');
    document.body.dataset.loaded = 'true';
  }
}

function drawLink() {
  const link = document.getElementById('link');
  const s = store.status;
  let text; let down = true;
  if (store.signedOut) text = 'this page’s access has ended (the dashboard restarted?): open the URL `shoal dashboard` printed';
  else if (!store.streamUp) text = 'the dashboard server cannot be reached: is `shoal dashboard` still running?';
  else if (!s || (!s.connected && !s.error)) { text = `connecting to ${s ? s.manager : 'the manager'}…`; down = false; }
  else if (s.connected) { text = `live · manager ${s.manager}`; down = false; } else text = `manager ${s.manager} unreachable: ${s.error} (retrying)`;
  // Only a change is written: the header is a live region, and screen readers announce writes.
  if (link.textContent !== text) link.textContent = text;
  link.className = down ? 'down' : '';
}

draw.count = 0;

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => { scheduled = false; draw(); });
}

// ----- the stream -----

function reset(snapshot) {
  for (const kind of KINDS) store[kind] = new Map((snapshot[kind] || []).map((o) => [o.id, o]));
  store.events = snapshot.events || [];
  store.status = snapshot.status;
  store.loaded = true;
}

function applyDelta(delta) {
  for (const kind of KINDS) {
    for (const o of (delta.upsert || {})[kind] || []) store[kind].set(o.id, o);
    for (const id of (delta.remove || {})[kind] || []) store[kind].delete(id);
  }
  if (delta.events && delta.events.length) {
    for (const event of delta.events) store.events.push(event);
    if (store.events.length > KEPT_EVENTS) store.events.splice(0, store.events.length - KEPT_EVENTS);
  }
}

function connect() {
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => { store.streamUp = true; schedule(); });
  source.addEventListener('reset', (e) => { store.streamUp = true; reset(JSON.parse(e.data)); schedule(); });
  source.addEventListener('delta', (e) => { applyDelta(JSON.parse(e.data)); schedule(); });
  source.addEventListener('status', (e) => { store.status = JSON.parse(e.data); schedule(); });
  // EventSource reconnects by itself and the server starts it over with a `reset` — unless this
  // page's token is no longer the dashboard's (it restarted): then it stops and says so.
  source.addEventListener('error', async () => {
    store.streamUp = false;
    drawLink();
    try {
      const answer = await fetch('/api/state', { method: 'HEAD', credentials: 'same-origin' });
      if (answer.status === 401) { store.signedOut = true; source.close(); drawLink(); }
    } catch (_) { /* the server is down: EventSource keeps trying */ }
  });
}

// ----- actions -----

function toast(text, isError) {
  const p = h('p', { class: isError ? 'error' : '', role: isError ? 'alert' : null }, text);
  const box = document.getElementById('toast');
  box.append(p);
  setTimeout(() => p.remove(), isError ? 12000 : 5000);
}

async function post(path, body) {
  const answer = await fetch(path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}),
    credentials: 'same-origin',
  });
  let json = {};
  try { json = await answer.json(); } catch (_) { /* an empty or non-JSON answer */ }
  if (!answer.ok) throw new Error(json.error || `${answer.status} ${answer.statusText}`);
  return json.message || 'done';
}

// Opens the confirmation dialog; `run(value)` is called on Confirm and may throw to keep it open.
// Each opening has its own number: an answer that comes after the dialog was closed (or opened
// for something else) is dropped, and Confirm is disabled while a request is under way.
let dialogOpening = 0;
function confirmAction({ title, text, field, ok, run }) {
  const opening = ++dialogOpening;
  const dialog = document.getElementById('confirm');
  const input = document.getElementById('confirm-input');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-error').textContent = '';
  document.getElementById('confirm-ok').textContent = ok;
  document.getElementById('confirm-field').hidden = !field;
  if (field) {
    document.getElementById('confirm-label').textContent = field.label;
    input.value = field.value;
  }
  // The button that opened it is found again by its key on close: a live redraw may have made it anew.
  const openerKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  const okButton = document.getElementById('confirm-ok');
  okButton.disabled = false;
  const form = dialog.querySelector('form');
  // Confirm is the form's only submit button, so Enter in the field confirms; Cancel and Escape close.
  document.getElementById('confirm-cancel').onclick = () => dialog.close('cancel');
  form.onsubmit = async (event) => {
    event.preventDefault();
    let value = null;
    if (field) {
      value = Number(input.value);
      if (input.value.trim() === '' || !Number.isInteger(value) || value < 0) {
        document.getElementById('confirm-error').textContent = 'Enter a whole number, 0 or more.';
        return;
      }
    }
    if (okButton.disabled) return;
    okButton.disabled = true;
    try {
      const message = await run(value);
      if (opening !== dialogOpening || !dialog.open) return;
      dialog.close('ok');
      toast(message, false);
    } catch (err) {
      if (opening !== dialogOpening || !dialog.open) return;
      document.getElementById('confirm-error').textContent = err.message;
    } finally {
      if (opening === dialogOpening) okButton.disabled = false;
    }
  };
  dialog.onclose = () => {
    const opener = openerKey && document.querySelector(`[data-key="${CSS.escape(openerKey)}"]`);
    (opener || document.getElementById('main')).focus();
  };
  dialog.showModal();
  if (field) { input.focus(); input.select(); } else document.getElementById('confirm-ok').focus();
}

function scale(id) {
  const s = store.services.get(id);
  if (!s) return;
  confirmAction({
    title: `Scale ${s.name}`,
    text: `The service runs ${s.replicas} replicas. Tasks are added or stopped at once.`,
    field: { label: 'Replicas', value: s.replicas }, ok: 'Scale',
    run: (replicas) => post(`/api/services/${encodeURIComponent(id)}/scale`, { replicas, specVersion: s.specVersion }),
  });
}

function rollback(id) {
  const s = store.services.get(id);
  if (!s) return;
  confirmAction({
    title: `Roll back ${s.name}`,
    text: `${s.name} goes back to the spec it had before its last update; its tasks are replaced by its rollback config.`,
    ok: 'Roll back', run: () => post(`/api/services/${encodeURIComponent(id)}/rollback`, { specVersion: s.specVersion }),
  });
}

function setAvailability(id, availability) {
  const n = store.nodes.get(id);
  if (!n) return;
  const what = {
    drain: 'takes no new tasks, and its tasks are moved to other nodes',
    active: 'takes new tasks again',
    pause: 'keeps its tasks but takes no new ones',
  }[availability];
  confirmAction({
    title: `${availability === 'active' ? 'Activate' : availability === 'drain' ? 'Drain' : 'Pause'} ${n.name}`,
    text: `Node ${n.name} ${what}.`, ok: availability === 'active' ? 'Activate' : availability === 'drain' ? 'Drain' : 'Pause',
    run: () => post(`/api/nodes/${encodeURIComponent(id)}/availability`, { availability }),
  });
}

// ----- start -----

window.addEventListener('hashchange', () => { draw(); document.getElementById('main').focus(); });
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('main').focus();
});
// Keep "… ago" and the grid's recent failures current without a change to draw.
setInterval(schedule, 10000);
connect();
draw();
