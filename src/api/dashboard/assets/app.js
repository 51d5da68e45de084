// wasup dashboard: one script, no build step, no dependencies. Signed in by
// an HttpOnly cookie (the key never reaches this script after sign-in);
// writes carry the CSRF token the sign-in answered. Live updates come from
// GET /api/events (same origin, so the cookie goes along). Every value from
// the API is written with textContent, never as HTML.
'use strict';

const EVENT_NAMES = ['session.status', 'session.qr', 'session.authenticated', 'session.disconnected',
  'message.received', 'message.sent', 'message.ack', 'message.failed'];
const STATUSES = ['created', 'initializing', 'qr_ready', 'authenticating', 'ready', 'disconnected', 'failed'];
const ROLES = ['viewer', 'operator', 'admin'];

const state = {
  me: null,
  sessions: new Map(),
  overview: null,
  stream: null,
  filter: { text: '', status: '' },
  qr: null, // { sessionId, expiresAt }
  timeline: null, // { sessionId, entries: Map(event id → {seq, li}) }
};

const $ = (sel, root) => (root || document).querySelector(sel);

// h('tag#id.class', {attr: value, on: {click: fn}}, ...children)
function h(spec, attrs, ...children) {
  const [head, ...classes] = spec.split('.');
  const [tag, id] = head.split('#');
  const el = document.createElement(tag);
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || ('HTTP ' + status));
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.me && state.me.csrfToken) headers['X-CSRF-Token'] = state.me.csrfToken;
  const res = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && path !== '/api/dashboard/session' && isSignInLost(err.code)) signedOut();
    throw err;
  }
  return data;
}

function isSignInLost(code) {
  return ['dashboard_session_invalid', 'missing_api_key', 'api_key_revoked', 'api_key_expired'].includes(code);
}

function can(role) {
  return state.me && ROLES.indexOf(state.me.role) >= ROLES.indexOf(role);
}

function say(text, isError) {
  const live = $('#live');
  live.textContent = text;
  live.className = 'live' + (isError ? ' error' : '') + (text ? ' shown' : '');
  clearTimeout(say.timer);
  if (text) say.timer = setTimeout(() => { live.textContent = ''; live.className = 'live'; }, 6000);
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function secondsUntil(iso) {
  return Math.max(0, Math.round((new Date(iso) - Date.now()) / 1000));
}

function badge(session) {
  return h('span.badge.s-' + session.status, {
    dataset: { badge: session.id }, text: session.status,
  });
}

function countdown(iso, prefix) {
  if (!iso) return h('span', { text: '—' });
  return h('span.countdown', { dataset: { countdown: iso, prefix: prefix || '' } });
}

function tickCountdowns() {
  for (const el of document.querySelectorAll('[data-countdown]')) {
    const s = secondsUntil(el.dataset.countdown);
    el.textContent = (el.dataset.prefix || '') + (s > 0 ? s + ' s' : 'now');
  }
}

function confirmAction(text) {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    $('#confirm-cancel').focus();
  });
}

// ---- sign-in ----

async function boot() {
  setInterval(tickCountdowns, 1000);
  window.addEventListener('hashchange', route);
  $('#sign-in-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', signOut);
  try {
    state.me = await api('GET', '/api/dashboard/session');
    signedIn();
  } catch (_) {
    signedOut();
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $('#api-key');
  const error = $('#sign-in-error');
  error.textContent = '';
  try {
    state.me = await api('POST', '/api/dashboard/session', { apiKey: input.value.trim() });
    input.value = '';
    signedIn();
  } catch (err) {
    error.textContent = err.message + (err.code ? ' (' + err.code + ')' : '');
    input.focus();
  }
}

async function signOut() {
  try { await api('DELETE', '/api/dashboard/session'); } catch (_) { /* signed out anyway */ }
  signedOut();
}

function signedIn() {
  $('#sign-in-page').hidden = true;
  $('#nav').hidden = false;
  $('#nav-keys').hidden = !can('admin');
  $('#sign-out').hidden = false;
  $('#who').textContent = state.me.keyName + ' · ' + state.me.role;
  $('#who').dataset.role = state.me.role;
  openStream();
  if (!location.hash || location.hash === '#/sign-in') location.hash = '#/sessions';
  else route();
}

function signedOut() {
  state.me = null;
  say('');
  closeStreams();
  state.sessions.clear();
  $('#nav').hidden = true;
  $('#sign-out').hidden = true;
  $('#who').textContent = '';
  $('#page').hidden = true;
  $('#page').replaceChildren();
  $('#sign-in-page').hidden = false;
  $('#api-key').focus();
}

// ---- the live stream ----

function openStream() {
  closeStreams();
  const es = new EventSource('/api/events');
  for (const name of EVENT_NAMES) es.addEventListener(name, (m) => onEvent(JSON.parse(m.data)));
  es.addEventListener('stream.end', () => { /* EventSource reconnects with Last-Event-ID */ });
  es.onopen = () => document.body.classList.remove('offline');
  es.onerror = () => document.body.classList.add('offline');
  state.stream = es;
}

function closeStreams() {
  if (state.stream) state.stream.close();
  state.stream = null;
}

function onEvent(env) {
  addTimeline(env);
  const s = state.sessions.get(env.sessionId);
  if (env.event === 'session.status' && s) {
    s.status = env.data.status;
    s.lastError = env.data.lastError;
    updateBadges(s);
    refreshSession(env.sessionId);
    refreshOverview();
  } else if (env.event === 'session.authenticated' && s) {
    s.phone = env.data.phone;
    s.pushName = env.data.pushName;
    refreshSession(env.sessionId);
  } else if (env.event === 'session.disconnected') {
    refreshSession(env.sessionId);
  } else if (!s && env.event.startsWith('session.')) {
    refreshSession(env.sessionId);
  }
  if (env.event === 'session.qr' && state.qr && state.qr.sessionId === env.sessionId) {
    showQr(env.data.qrCode, env.data.expiresAt);
  }
}

function updateBadges(session) {
  for (const el of document.querySelectorAll('[data-badge]')) {
    if (el.dataset.badge !== session.id) continue;
    el.textContent = session.status;
    el.className = 'badge s-' + session.status;
  }
  if (state.qr && state.qr.sessionId === session.id) linkStatusChanged(session);
}

const refreshing = new Map();
function refreshSession(id) {
  clearTimeout(refreshing.get(id));
  refreshing.set(id, setTimeout(async () => {
    try {
      const s = await api('GET', '/api/sessions/' + encodeURIComponent(id));
      const had = state.sessions.has(id);
      state.sessions.set(s.id, s);
      updateBadges(s);
      const row = document.querySelector('[data-session-row="' + CSS.escape(s.name) + '"]');
      if (row) row.replaceWith(sessionRow(s));
      else if (!had && currentPage() === 'sessions') renderSessionRows();
      if (currentPage() === 'session' && routeArgs()[0] === id) renderSessionFacts(s);
    } catch (err) {
      if (err.status === 404) { state.sessions.delete(id); if (currentPage() === 'sessions') renderSessionRows(); }
    }
  }, 150));
}

let overviewTimer = null;
function refreshOverview() {
  clearTimeout(overviewTimer);
  overviewTimer = setTimeout(async () => {
    try { state.overview = await api('GET', '/api/sessions/stats/overview'); renderOverview(); } catch (_) { /* shown on next load */ }
  }, 300);
}

// ---- routing ----

function routeParts() { return location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent); }
function currentPage() { return routeParts()[0] || 'sessions'; }
function routeArgs() { return routeParts().slice(1); }

function route() {
  if (!state.me) return;
  state.qr = null;
  state.timeline = null;
  const page = currentPage();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = $('#page');
  main.hidden = false;
  main.replaceChildren(h('p.muted', { text: 'Loading…' }));
  const pages = { sessions: sessionsPage, link: linkPage, session: sessionPage, keys: keysPage };
  (pages[page] || sessionsPage)(...routeArgs()).catch((err) => {
    main.replaceChildren(h('p.error', { role: 'alert', text: err.message }));
  });
  $('#main').focus({ preventScroll: true });
}

// ---- Sessions ----

async function sessionsPage() {
  const [list, overview] = await Promise.all([
    api('GET', '/api/sessions'), api('GET', '/api/sessions/stats/overview'),
  ]);
  state.sessions = new Map(list.map((s) => [s.id, s]));
  state.overview = overview;
  const search = h('input#search', {
    type: 'search', placeholder: 'Name or metadata', 'aria-label': 'Search sessions', value: state.filter.text,
    on: { input: (e) => { state.filter.text = e.target.value; renderSessionRows(); } },
  });
  const status = h('select#status-filter', {
    'aria-label': 'Filter by status',
    on: { change: (e) => { state.filter.status = e.target.value; renderSessionRows(); } },
  }, h('option', { value: '', text: 'Every status' }), STATUSES.map((s) => h('option', { value: s, text: s })));
  status.value = state.filter.status;
  const tools = h('div.row.tools', {}, search, status);
  if (can('operator')) {
    const name = h('input#create-name', { placeholder: 'new-session-name', 'aria-label': 'New session name', required: true, pattern: '[A-Za-z0-9_.\\-]{1,64}' });
    tools.append(h('form.row.create', {
      on: {
        submit: async (e) => {
          e.preventDefault();
          try {
            const s = await api('POST', '/api/sessions', { name: name.value.trim() });
            state.sessions.set(s.id, s);
            name.value = '';
            say('Created ' + s.name);
            renderSessionRows();
            refreshOverview();
          } catch (err) { say(err.message, true); }
        },
      },
    }, name, h('button#create-button', { type: 'submit', text: 'Create session' })));
  }
  $('#page').replaceChildren(
    h('h1', { text: 'Sessions' }),
    h('div#overview.overview'),
    tools,
    h('div#session-rows.rows'),
  );
  renderOverview();
  renderSessionRows();
}

function renderOverview() {
  const box = $('#overview');
  if (!box || !state.overview) return;
  const o = state.overview;
  const stat = (label, value, id) => h('div.stat', { id }, h('span.value', { text: value }), h('span.label', { text: label }));
  box.replaceChildren(
    stat('sessions', o.total, 'stat-total'),
    stat('ready', o.ready, 'stat-ready'),
    stat('active', o.active, 'stat-active'),
    stat('disconnected', o.disconnected),
    stat('MiB resident', o.memoryUsage.rss),
    stat('MiB heap', o.memoryUsage.heapUsed + ' / ' + o.memoryUsage.heapTotal),
  );
}

function matches(s) {
  const f = state.filter;
  if (f.status && s.status !== f.status) return false;
  if (!f.text) return true;
  const needle = f.text.toLowerCase();
  const hay = [s.name, s.phone, s.pushName, JSON.stringify(s.metadata || s.config || {})].join(' ').toLowerCase();
  return hay.includes(needle);
}

function renderSessionRows() {
  const box = $('#session-rows');
  if (!box) return;
  const rows = [...state.sessions.values()].filter(matches).sort((a, b) => a.name.localeCompare(b.name));
  if (!rows.length) {
    box.replaceChildren(h('p.muted', { text: state.sessions.size ? 'No session matches.' : 'No sessions yet.' }));
    return;
  }
  box.replaceChildren(h('div.row-head', {},
    ['Name', 'Status', 'Phone', 'Push name', 'Last active', 'Last error', 'Next retry', ''].map((t) => h('span', { text: t }))),
  ...rows.map(sessionRow));
}

function sessionRow(s) {
  const cell = (label, ...content) => h('span.cell', { 'data-label': label }, ...content);
  return h('div.srow', { dataset: { sessionRow: s.name, sessionId: s.id } },
    cell('Name', h('a', { href: '#/session/' + encodeURIComponent(s.id), text: s.name })),
    cell('Status', badge(s)),
    h('span.cell.phone', { 'data-label': 'Phone' }, s.phone || '—'),
    cell('Push name', s.pushName || '—'),
    cell('Last active', fmtTime(s.lastActive)),
    cell('Last error', s.lastError ? h('span.err-text', { text: s.lastError }) : '—'),
    cell('Next retry', countdown(s.nextRetryAt, 'in ')),
    h('span.cell.actions', {}, actionButtons(s)),
  );
}

function actionButtons(s) {
  // Linking needs the QR, which only an operator may read: a viewer gets no buttons.
  if (!can('operator')) return [];
  const out = [h('a.button.quiet', { href: '#/link/' + encodeURIComponent(s.id), text: 'Link' })];
  const act = (action, label, cls, confirmText) => h('button' + (cls ? '.' + cls : ''), {
    type: 'button', dataset: { action }, text: label,
    on: {
      click: async () => {
        if (confirmText && !(await confirmAction(confirmText))) return;
        try {
          if (action === 'delete') {
            await api('DELETE', '/api/sessions/' + encodeURIComponent(s.id));
            state.sessions.delete(s.id);
            say('Deleted ' + s.name);
            if (currentPage() === 'sessions') renderSessionRows(); else location.hash = '#/sessions';
            refreshOverview();
            return;
          }
          const updated = await api('POST', '/api/sessions/' + encodeURIComponent(s.id) + '/' + action);
          if (updated && updated.id) { state.sessions.set(updated.id, updated); updateBadges(updated); }
          say(label + ': ' + s.name);
          refreshSession(s.id);
        } catch (err) { say(err.message, true); }
      },
    },
  });
  out.push(
    act('start', 'Start'),
    act('stop', 'Stop'),
    act('restart', 'Restart'),
    act('logout', 'Log out', 'warn', 'Log out ' + s.name + '? The phone unlinks this device; linking again needs a new QR.'),
    act('delete', 'Delete', 'danger', 'Delete ' + s.name + '? Its records and webhooks are removed.'),
  );
  return out;
}

// ---- Link ----

async function linkPage(id) {
  const s = await api('GET', '/api/sessions/' + encodeURIComponent(id));
  state.sessions.set(s.id, s);
  state.qr = { sessionId: s.id, expiresAt: null };
  const main = $('#page');
  const pairing = h('form.pairing', {
    on: {
      submit: async (e) => {
        e.preventDefault();
        const phone = $('#pair-phone').value.trim();
        try {
          const r = await api('POST', '/api/sessions/' + encodeURIComponent(s.id) + '/pairing-code', { phoneNumber: phone });
          $('#pairing-code').textContent = r.pairingCode;
          say('Enter the code on the phone: Linked devices → Link with phone number');
        } catch (err) { say(err.message, true); }
      },
    },
  },
  h('label', { for: 'pair-phone', text: 'Or link by phone number (country code first, digits only)' }),
  h('div.row', {},
    h('input#pair-phone', { inputmode: 'numeric', placeholder: '628123456789', pattern: '[0-9]{6,15}', required: true }),
    h('button#pair-submit', { type: 'submit', text: 'Get pairing code' })),
  h('p#pairing-code.pairing-code', { 'aria-live': 'polite' }));
  main.replaceChildren(
    h('p.crumbs', {}, h('a', { href: '#/sessions', text: 'Sessions' }), ' / ', h('a', { href: '#/session/' + encodeURIComponent(s.id), text: s.name }), ' / Link'),
    h('h1', {}, 'Link ', s.name, ' ', badge(s)),
    h('div.link-grid', {},
      h('div.card.qr-card', {},
        h('div#qr-box.qr-box', {}, h('p#qr-note.muted', { text: 'Waiting for a QR…' })),
        h('p#qr-expiry.muted'),
        h('div#link-actions.row', {}, can('operator') && ['created', 'failed', 'disconnected'].includes(s.status)
          ? actionButtons(s).filter((b) => b.dataset && b.dataset.action === 'start') : [])),
      h('div.card', {},
        h('p', { text: 'Open WhatsApp on the phone → Linked devices → Link a device, and scan the code. It is replaced the moment it rotates.' }),
        pairing)),
  );
  linkStatusChanged(s);
}

async function linkStatusChanged(s) {
  const note = $('#qr-note');
  if (!$('#qr-box')) return;
  if (s.status === 'qr_ready' && !$('#qr')) {
    try {
      const q = await api('GET', '/api/sessions/' + encodeURIComponent(s.id) + '/qr');
      if (state.qr && state.qr.sessionId === s.id && !$('#qr')) showQr(q.qrCode, q.expiresAt);
    } catch (_) { /* the next session.qr event brings one */ }
  } else if (s.status !== 'qr_ready') {
    const img = $('#qr');
    if (img) img.remove();
    $('#qr-expiry').textContent = '';
    const text = s.status === 'ready'
      ? 'Linked' + (s.phone ? ' as +' + s.phone : '') + (s.pushName ? ' (' + s.pushName + ')' : '') + '.'
      : s.status === 'authenticating' ? 'Scanned: authenticating…' : 'No QR while ' + s.status + '.';
    if (note) note.textContent = text;
    else $('#qr-box').replaceChildren(h('p#qr-note.muted', { text }));
    if (s.status === 'ready' || s.status === 'authenticating') $('#link-actions').replaceChildren();
  }
}

function showQr(dataUrl, expiresAt) {
  const box = $('#qr-box');
  if (!box) return;
  let img = $('#qr');
  if (!img) {
    img = h('img#qr', { alt: 'QR code to scan with WhatsApp', width: 264, height: 264 });
    box.replaceChildren(img);
  }
  img.src = dataUrl;
  state.qr.expiresAt = expiresAt;
  $('#qr-expiry').replaceChildren('Expires ', countdown(expiresAt, 'in '));
  tickCountdowns();
}

// ---- Session detail ----

async function sessionPage(id) {
  const s = await api('GET', '/api/sessions/' + encodeURIComponent(id));
  state.sessions.set(s.id, s);
  const [hooks, messages] = await Promise.all([
    api('GET', '/api/sessions/' + encodeURIComponent(s.id) + '/webhooks'),
    api('GET', '/api/sessions/' + encodeURIComponent(s.id) + '/messages?limit=20').catch((err) => err),
  ]);
  const main = $('#page');
  main.replaceChildren(
    h('p.crumbs', {}, h('a', { href: '#/sessions', text: 'Sessions' }), ' / ', s.name),
    h('h1', {}, s.name, ' ', badge(s)),
    h('div.row.actions', {}, actionButtons(s)),
    h('div#facts.facts'),
    h('div.detail-grid', {},
      h('section.card', { 'aria-labelledby': 'timeline-h' }, h('h2#timeline-h', { text: 'Timeline' }), h('ol#timeline.timeline')),
      h('div', {},
        h('section.card', { 'aria-labelledby': 'hooks-h' }, h('h2#hooks-h', { text: 'Webhooks' }), h('div#hooks')),
        h('section.card', { 'aria-labelledby': 'msgs-h' }, h('h2#msgs-h', { text: 'Recent messages' }), h('div#messages')))),
  );
  renderSessionFacts(s);
  renderMessages(messages);
  renderHooks(s, hooks);
  // The timeline: the session's stored log, read once (follow=false: the
  // stream ends when it is sent, so it holds no stream open); live events
  // then come from the page's one stream (onEvent).
  state.timeline = { sessionId: s.id, entries: new Map() };
  const res = await fetch('/api/events?follow=false&after=evt_00000000000000000000000000000000&sessions='
    + encodeURIComponent(s.id), { credentials: 'same-origin' });
  if (!res.ok) { $('#timeline').replaceChildren(h('li.error', { text: 'The event log: HTTP ' + res.status })); return; }
  for (const block of (await res.text()).split('\n\n')) {
    const data = block.split('\n').find((l) => l.startsWith('data: '));
    const name = block.split('\n').find((l) => l.startsWith('event: '));
    if (data && name && name !== 'event: stream.end') addTimeline(JSON.parse(data.slice(6)));
  }
}

function renderSessionFacts(s) {
  const box = $('#facts');
  if (!box) return;
  const fact = (k, v) => [h('dt', { text: k }), h('dd', {}, v)];
  box.replaceChildren(h('dl', {},
    fact('Id', h('code', { text: s.id })), fact('Phone', s.phone || '—'), fact('Push name', s.pushName || '—'),
    fact('Connected', fmtTime(s.connectedAt)), fact('Last active', fmtTime(s.lastActive)),
    fact('Last error', s.lastError || '—'), fact('Next retry', countdown(s.nextRetryAt, 'in ')),
    fact('Restarts', String(s.restarts))));
  tickCountdowns();
}

function addTimeline(env) {
  const list = $('#timeline');
  const t = state.timeline;
  if (!list || !t || t.sessionId !== env.sessionId || t.entries.has(env.id)) return;
  const d = env.data || {};
  let text = env.event;
  if (env.event === 'session.status') text = (d.previousStatus || '?') + ' → ' + d.status + (d.lastError ? ' (' + d.lastError + ')' : '');
  else if (env.event === 'session.disconnected') text = 'disconnected: ' + d.reason + (d.willRetry ? ', will retry' + (d.nextRetryAt ? ' at ' + fmtTime(d.nextRetryAt) : '') : ', no retry');
  else if (env.event === 'session.authenticated') text = 'authenticated as +' + d.phone + (d.pushName ? ' (' + d.pushName + ')' : '');
  else if (env.event === 'session.qr') text = 'new QR, expires ' + fmtTime(d.expiresAt);
  else if (env.event.startsWith('message.')) text = env.event + ' ' + (d.chatId || '');
  t.entries.set(env.id, { seq: env.seq, li: h('li', {}, h('time', { datetime: env.timestamp, text: fmtTime(env.timestamp) }), ' ',
    h('span.ev', { text: '#' + env.seq + ' ' + text })) });
  // Newest first, by seq (live events may arrive while the log is read).
  const shown = [...t.entries.values()].sort((a, b) => b.seq - a.seq).slice(0, 200);
  list.replaceChildren(...shown.map((e) => e.li));
}

function renderMessages(messages) {
  const box = $('#messages');
  if (messages instanceof Error) {
    box.replaceChildren(h('p.muted', {
      text: messages.status === 404 && messages.code === 'route_not_found'
        ? 'This build has no message routes yet.' : messages.message,
    }));
    return;
  }
  const list = Array.isArray(messages) ? messages : (messages && (messages.items || messages.messages)) || [];
  if (!list.length) { box.replaceChildren(h('p.muted', { text: 'No messages.' })); return; }
  box.replaceChildren(h('ul.plain', {}, list.slice(0, 20).map((m) => h('li', {},
    h('span.muted', { text: fmtTime(m.timestamp || m.createdAt) + ' ' + (m.fromMe ? '→ ' : '← ') + (m.chatId || '') + ' ' }),
    h('span', { text: m.body || m.type || '' }),
    m.status ? h('span.badge', { text: m.status }) : null))));
}

async function renderHooks(s, hooks) {
  const box = $('#hooks');
  if (!hooks.length) { box.replaceChildren(h('p.muted', { text: 'No webhooks.' })); return; }
  box.replaceChildren(...hooks.map((w) => h('div.hook', { dataset: { webhook: w.id } },
    h('p', {}, h('code', { text: w.url }), ' ', h('span.muted', { text: w.events.join(', ') + (w.active ? '' : ' (paused)') })),
    h('div.deliveries', { id: 'deliveries-' + w.id }, h('p.muted', { text: 'Loading deliveries…' })))));
  for (const w of hooks) {
    const base = '/api/sessions/' + encodeURIComponent(s.id) + '/webhooks/' + encodeURIComponent(w.id);
    const target = document.getElementById('deliveries-' + w.id);
    try {
      const attempts = await api('GET', base + '/deliveries?limit=10');
      if (!attempts.length) { target.replaceChildren(h('p.muted', { text: 'No deliveries yet.' })); continue; }
      target.replaceChildren(h('ul.plain', {}, attempts.map((a) => h('li', {},
        h('span.badge.d-' + a.status, { text: a.status }), ' ',
        h('span', { text: a.event + ' #' + a.attempt + ' ' + (a.statusCode || '') + ' ' + (a.error || '') + ' ' + fmtTime(a.at) }),
        a.status === 'dead' && can('operator') ? h('button.quiet', {
          type: 'button', dataset: { redrive: a.eventId }, text: 'Redrive',
          on: {
            click: async () => {
              try { await api('POST', base + '/deliveries/' + encodeURIComponent(a.eventId) + '/redrive'); say('Queued again'); } catch (err) { say(err.message, true); }
            },
          },
        }) : null))));
    } catch (err) { target.replaceChildren(h('p.error', { text: err.message })); }
  }
}

// ---- API keys ----

async function keysPage() {
  if (!can('admin')) { $('#page').replaceChildren(h('p.error', { text: 'Only an admin key manages API keys.' })); return; }
  const keys = await api('GET', '/api/auth/api-keys');
  const name = h('input#key-name', { placeholder: 'name', 'aria-label': 'Key name', required: true });
  const role = h('select#key-role', { 'aria-label': 'Role' }, ROLES.map((r) => h('option', { value: r, text: r })));
  role.value = 'operator';
  const created = h('div#key-created', { 'aria-live': 'polite' });
  const form = h('form.row.create', {
    on: {
      submit: async (e) => {
        e.preventDefault();
        try {
          const r = await api('POST', '/api/auth/api-keys', { name: name.value.trim(), role: role.value });
          name.value = '';
          const secret = h('code#key-secret.secret', { text: r.apiKey });
          created.replaceChildren(h('div.card.once', {},
            h('p', { text: 'The new key, shown this once. Copy it now:' }), secret,
            h('button', {
              type: 'button', text: 'Copy',
              on: {
                click: async () => {
                  try { await navigator.clipboard.writeText(r.apiKey); say('Copied'); } catch (_) {
                    const range = document.createRange(); range.selectNodeContents(secret);
                    const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
                    say('Selected: press Ctrl+C to copy');
                  }
                },
              },
            })));
          renderKeys(await api('GET', '/api/auth/api-keys'));
        } catch (err) { say(err.message, true); }
      },
    },
  }, name, role, h('button#key-create', { type: 'submit', text: 'Create key' }));
  $('#page').replaceChildren(h('h1', { text: 'API keys' }), form, created, h('div#key-rows.rows'));
  renderKeys(keys);
}

function renderKeys(keys) {
  const box = $('#key-rows');
  keys.sort((a, b) => a.keyPrefix.localeCompare(b.keyPrefix));
  const cell = (label, ...c) => h('span.cell', { 'data-label': label }, ...c);
  box.replaceChildren(h('div.row-head.keys', {}, ['Prefix', 'Name', 'Role', 'Created', 'Expires', 'Revoked', ''].map((t) => h('span', { text: t }))),
    ...keys.map((k) => h('div.srow.keys', { dataset: { keyPrefix: k.keyPrefix } },
      cell('Prefix', h('code', { text: k.keyPrefix + '…' })),
      cell('Name', k.name), cell('Role', k.role + (k.allowedSessions ? ' (scoped)' : '')),
      cell('Created', fmtTime(k.createdAt)), cell('Expires', fmtTime(k.expiresAt)), cell('Revoked', fmtTime(k.revokedAt)),
      h('span.cell.actions', {}, k.revokedAt ? null : h('button.danger', {
        type: 'button', dataset: { revoke: k.id }, text: 'Revoke',
        on: {
          click: async () => {
            if (!(await confirmAction('Revoke ' + k.name + ' (' + k.keyPrefix + '…)? Clients using it stop at once.'))) return;
            try { await api('DELETE', '/api/auth/api-keys/' + encodeURIComponent(k.id)); renderKeys(await api('GET', '/api/auth/api-keys')); say('Revoked'); } catch (err) { say(err.message, true); }
          },
        },
      })))));
}

document.addEventListener('DOMContentLoaded', boot);
