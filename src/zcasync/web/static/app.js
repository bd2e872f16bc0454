// The zcasync dashboard page: hash-routed views over the JSON API.
// Every value from the server is put in the page as text (textContent,
// setAttribute), never parsed as HTML.  The page hears of commits through
// server-sent events (api/events) and refetches what it shows; when the
// event stream fails it polls every two seconds instead.
'use strict';

(function () {
  const POLL_MS = 2000;
  const BACKSTOP_MS = 10000;
  const STATES = ['pending', 'running', 'completed', 'succeeded', 'failed', 'cancelled'];
  const state = {
    token: sessionStorage.getItem('zcasync-token') || '',
    actions: null, view: null, busy: false, again: false,
    poller: null, queues: null, message: null
  };

  // -- building the page -------------------------------------------------

  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach((c) => append(node, c)); return; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function jobLink(id, text) {
    if (!id) return el('span', {class: 'muted', text: text || 'unknown'});
    return el('a', {href: '#/job/' + encodeURIComponent(id), text: text || id});
  }

  function badge(name) {
    return el('span', {class: 'badge ' + String(name).replace(/[^a-z-]/g, ''), text: name});
  }

  function jobState(job) {
    if (job.status === 'completed') return job.failed ? 'failed' : 'succeeded';
    return job.status;
  }

  function seconds(value) {
    if (value === null || value === undefined) return '-';
    const s = Math.abs(value);
    if (s < 1) return (value * 1000).toFixed(0) + ' ms';
    if (s < 60) return value.toFixed(1) + ' s';
    if (s < 3600) return Math.floor(value / 60) + ' min ' + Math.round(value % 60) + ' s';
    if (s < 86400) return (value / 3600).toFixed(1) + ' h';
    return (value / 86400).toFixed(1) + ' d';
  }

  function time(iso) {
    if (!iso) return el('span', {class: 'muted', text: '-'});
    const when = new Date(iso);
    const ago = (Date.now() - when.getTime()) / 1000;
    const text = iso.replace('T', ' ').replace(/\.\d+/, '').replace('+00:00', ' UTC');
    return el('span', {title: iso, text: text + (ago > 0 ? ' (' + seconds(ago) + ' ago)' : '')});
  }

  function progress(p, full) {
    if (!p) return null;
    const percent = Math.round(p.fraction * 100);
    const bar = el('span', {class: 'bar' + (full ? ' full' : ''), role: 'progressbar',
      'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': percent},
    el('span'));
    bar.firstChild.style.width = percent + '%';
    const label = percent + '%' + (p.total !== null && p.total !== undefined ? ' (' + p.done + '/' + p.total + ')' : '');
    return el('span', {class: 'progress'}, bar, el('span', {class: 'bar-label', text: label}));
  }

  function table(headers, rows, empty) {
    if (!rows.length) return el('p', {class: 'muted', text: empty || 'none'});
    return el('table', {}, el('thead', {}, el('tr', {}, headers.map((h) => el('th', {text: h})))),
      el('tbody', {}, rows));
  }

  function details(pairs) {
    return el('table', {class: 'details'}, el('tbody', {}, pairs.map(([name, value]) =>
      el('tr', {}, el('th', {text: name}), el('td', {}, value === null || value === undefined || value === '' ? '-' : value)))));
  }

  function json(value) {
    const flat = JSON.stringify(value);
    return flat !== undefined && flat.length <= 100 ? flat : JSON.stringify(value, null, 2);
  }

  function queueLabel(name) {
    if (name === null || name === undefined) return '-';
    return name === '' ? "'' (primary)" : name;
  }

  function toast(text, error) {
    const box = document.getElementById('toast');
    const item = el('div', {class: error ? 'error' : '', text: text});
    box.appendChild(item);
    setTimeout(() => item.remove(), error ? 9000 : 5000);
  }

  // -- talking to the server ---------------------------------------------

  async function answer(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || ('HTTP ' + response.status));
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function get(path) {
    return fetch(path, {headers: {'Accept': 'application/json'}, cache: 'no-store'}).then(answer);
  }

  function post(path, body) {
    const headers = {'Content-Type': 'application/json', 'Accept': 'application/json'};
    if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
    return fetch(path, {method: 'POST', headers: headers, body: JSON.stringify(body || {})}).then(answer);
  }

  function act(label, path, body) {
    return post(path, body).then((result) => {
      toast(label + ': done');
      refresh();
      return result;
    }, (error) => {
      toast(label + ' refused' + (error.status ? ' (' + error.status + ')' : '') + ': ' + error.message, true);
      throw error;
    });
  }

  function actionButton(label, cls, onclick) {
    return el('button', {class: cls, type: 'button', disabled: state.actions === false,
      title: state.actions === false ? 'this dashboard is read-only (started without a token)' : null,
      onclick: onclick, text: label});
  }

  // -- views ---------------------------------------------------------------

  function parseHash() {
    const hash = location.hash.replace(/^#\/?/, '');
    const [path, query] = hash.split('?');
    const parts = path.split('/').filter((p) => p !== '').map(decodeURIComponent);
    return {parts: parts, params: new URLSearchParams(query || '')};
  }

  const views = {};

  views.overview = {
    load: () => get('api/overview'),
    render(data) {
      const t = data.totals;
      state.chartVersion = (state.chartVersion || 0) + 1;
      const cards = [
        ['pending', t.pending], ['running', (t.running || 0) + ' / ' + (t.capacity || 0)],
        ['completed in the last hour', t.completed_last_hour],
        ['failed in the last hour', t.failed_last_hour],
        ['jobs per minute (last 5 min)', t.throughput_per_minute]];
      return [
        el('h1', {text: 'Overview'}),
        el('p', {class: 'muted'}, 'database ' + data.database,
          data.stats_since ? ['; figures of the last hour complete since ', time(data.stats_since)] : null),
        el('div', {class: 'cards', id: 'totals'}, cards.map(([label, value]) =>
          el('div', {class: 'card'}, el('div', {class: 'value', text: value === null ? '-' : value}), el('div', {class: 'label', text: label})))),
        el('h2', {text: 'Queues'}),
        table(['queue', 'pending', 'oldest wait', 'next due', 'running / capacity', 'dispatchers', 'completed 1 h', 'failed 1 h', 'per minute'],
          data.queues.map((q) => el('tr', {}, el('td', {}, el('a', {href: '#/jobs?state=pending&queue=' + encodeURIComponent(q.name), text: queueLabel(q.name)})),
            el('td', {text: q.pending}), el('td', {text: seconds(q.oldest_wait_seconds)}), el('td', {}, time(q.next_due)),
            el('td', {text: q.running + ' / ' + q.capacity}),
            el('td', {text: q.dispatchers.alive + ' alive, ' + q.dispatchers.dead + ' dead, ' + q.dispatchers.stopped + ' stopped'}),
            el('td', {text: q.completed_last_hour === null ? '-' : q.completed_last_hour}),
            el('td', {}, q.failed_last_hour ? el('a', {href: '#/jobs?state=failed&queue=' + encodeURIComponent(q.name), text: q.failed_last_hour}) : String(q.failed_last_hour === null ? '-' : 0)),
            el('td', {text: q.throughput_per_minute === null ? '-' : q.throughput_per_minute}))),
          'no queues yet: a worker creates them when it starts'),
        el('h2', {text: 'Running jobs'}),
        runningTable(data.running),
        el('h2', {}, 'Activity ', rangeSelect()),
        el('div', {class: 'charts'}, ['throughput', 'latency', 'failures'].map(chart))
      ];
    }
  };

  const RANGES = {'15': 'last 15 minutes (20 s bars)', '60': 'last hour (1 min bars)'};

  function rangeSelect() {
    const current = sessionStorage.getItem('zcasync-range') || '15';
    const select = el('select', {'aria-label': 'chart range', class: 'range', onchange: () => {
      sessionStorage.setItem('zcasync-range', select.value);
      select.blur();
      refresh();
    }}, Object.entries(RANGES).map(([value, label]) => el('option', {value: value, selected: value === current, text: label})));
    return select;
  }

  function chart(name) {
    // the same <img> across renders: it shows the old chart until the new
    // one has loaded, so a live page does not flicker
    state.charts = state.charts || {};
    let img = state.charts[name];
    if (!img) img = state.charts[name] = el('img', {alt: name + ' chart', width: 640, height: 200});
    const minutes = sessionStorage.getItem('zcasync-range') || '15';
    img.src = 'charts/' + name + '.svg?minutes=' + minutes + '&bucket=' + (minutes === '15' ? 20 : 60) + '&v=' + state.chartVersion;
    return img;
  }

  function runningTable(jobs) {
    return table(['job', 'status', 'call', 'queue', 'agent', 'running for', 'progress', 'status text'],
      jobs.map((j) => el('tr', {class: 'job', 'data-id': j.id},
        el('td', {}, jobLink(j.id)), el('td', {}, badge(jobState(j))), el('td', {class: 'call', text: j.call || j.error || ''}),
        el('td', {text: queueLabel(j.queue)}), el('td', {text: j.agent || '-'}),
        el('td', {text: seconds(j.duration_seconds)}), el('td', {}, progress(j.progress) || '-'),
        el('td', {text: j.status_text || ''}))), 'no job is running');
  }

  views.dispatchers = {
    load: () => get('api/dispatchers'),
    render(data) {
      const rows = data.items.map((d) => el('tr', {},
        el('td', {text: queueLabel(d.queue)}), el('td', {class: 'call', text: d.uuid}), el('td', {}, badge(d.state)),
        el('td', {}, time(d.activated)), el('td', {}, time(d.last_ping)),
        el('td', {}, d.agents.map((a) => agentControl(d, a))),
        el('td', {}, d.agents.map((a) => a.jobs.map((j) => el('div', {}, jobLink(j.id), ' ', badge(jobState(j)), ' ', progress(j.progress)))))));
      return [
        el('h1', {text: 'Dispatchers'}),
        el('div', {class: 'actions'}, actionButton('Prune stopped dispatchers', 'danger', () => {
          act('prune', 'api/dispatchers/prune', {}).then((r) => toast('pruned ' + r.pruned.length + ', kept ' + r.kept.length)).catch(() => null);
        })),
        table(['queue', 'dispatcher', 'state', 'activated', 'last ping', 'agents (held / size)', 'running now'], rows,
          'no dispatcher has registered yet')
      ];
    }
  };

  function agentControl(d, a) {
    const input = el('input', {class: 'size', type: 'number', min: 0, max: 1000, value: a.size, 'aria-label': 'size of agent ' + a.name});
    return el('div', {class: 'agent'}, el('b', {text: a.name}), ' ' + a.held + ' / ' + a.size + ', ' + a.completed + ' completed kept ',
      input, ' ', actionButton('Resize', '', () => {
        act('resize ' + a.name, 'api/agents/resize', {queue: d.queue, dispatcher: d.uuid, agent: a.name, size: parseInt(input.value, 10)}).catch(() => null);
      }));
  }

  views.jobs = {
    load(params) {
      const query = new URLSearchParams(params);
      if (!query.get('state')) query.set('state', 'running');
      const listing = get('api/jobs?' + query.toString());
      const names = state.queues ? Promise.resolve(state.queues) : get('api/overview').then((o) => (state.queues = o.queues.map((q) => q.name)));
      return Promise.all([listing, names]).then(([list, queues]) => ({list: list, queues: queues, params: query}));
    },
    render(data) {
      const params = data.params;
      const current = params.get('state');
      const link = (changes) => {
        const p = new URLSearchParams(params);
        p.delete('cursor');
        for (const [k, v] of Object.entries(changes)) { if (v === null) p.delete(k); else p.set(k, v); }
        return '#/jobs?' + p.toString();
      };
      const select = el('select', {name: 'queue', 'aria-label': 'queue'}, el('option', {value: '*', text: 'all queues'}),
        data.queues.map((name) => el('option', {value: name, selected: params.has('queue') && params.get('queue') === name, text: queueLabel(name)})));
      const text = (name, placeholder) => el('input', {name: name, placeholder: placeholder, value: params.get(name) || ''});
      const form = el('form', {class: 'filters', onsubmit: (event) => {
        event.preventDefault();
        const p = new URLSearchParams({state: current});
        const f = new FormData(form);
        if (f.get('queue') !== '*') p.set('queue', f.get('queue'));
        for (const name of ['callable', 'since', 'until']) if (f.get(name)) p.set(name, f.get(name));
        location.hash = '#/jobs?' + p.toString();
      }}, select, text('callable', 'callable contains'), text('since', 'since (ISO, e.g. 2030-01-31T09:00Z)'),
      text('until', 'until (ISO)'), el('button', {type: 'submit', text: 'Filter'}));
      const list = data.list;
      const rows = list.items.map((j) => el('tr', {class: 'job', 'data-id': j.id || ''},
        el('td', {}, jobLink(j.id)), el('td', {}, badge(jobState(j))), el('td', {class: 'call', text: j.call || ''}),
        el('td', {text: queueLabel(j.queue)}),
        el('td', {}, time(j.active_end || j.active_start || j.begin_after)),
        el('td', {text: seconds(j.wait_seconds)}), el('td', {text: seconds(j.duration_seconds)}),
        el('td', {}, j.error ? el('span', {class: 'error', text: j.error}) : (progress(j.progress) || ''))));
      const pager = el('div', {class: 'pager'},
        params.get('cursor') ? el('a', {href: link({}), text: 'first page'}) : null,
        list.next ? el('a', {href: link({cursor: list.next}), text: list.complete ? 'next page' : 'continue searching'}) : null,
        el('span', {class: 'muted', text: list.items.length + ' shown, ' + list.scanned + ' looked at' + (list.complete ? '' : '; stopped early, more may match')}));
      return [
        el('h1', {text: 'Jobs'}),
        el('div', {class: 'tabs'}, STATES.map((s) => el('a', {href: link({state: s}), class: s === current ? 'current' : '', text: s}))),
        form,
        table(['job', 'status', 'call', 'queue', 'time', 'wait', 'run time', 'error or progress'], rows, 'no ' + current + ' jobs'),
        pager
      ];
    }
  };

  views.job = {
    load: (params, parts) => get('api/jobs/' + encodeURIComponent(parts[1] || '')),
    render(job) {
      const s = jobState(job);
      const buttons = [];
      if (s === 'failed') {
        buttons.push(actionButton('Retry', 'primary', () => {
          act('retry', 'api/jobs/' + encodeURIComponent(job.id) + '/retry').then((r) => {
            state.message = {hash: location.hash, content: ['queued again as ', jobLink(r.new_job)]};
            refresh();
          }).catch(() => null);
        }));
      }
      if (['pending', 'parked', 'assigned', 'active'].includes(s)) {
        buttons.push(actionButton('Cancel', 'danger', () => {
          act('cancel', 'api/jobs/' + encodeURIComponent(job.id) + '/cancel').catch(() => null);
        }));
      }
      const related = (title, jobs) => jobs && jobs.length ? [el('h2', {text: title}),
        el('ul', {}, jobs.map((j) => el('li', {}, jobLink(j.id), ' ', badge(jobState(j)), ' ', el('span', {class: 'call', text: j.call || ''}))))] : null;
      const annotations = Object.entries(job.annotations || {});
      const message = state.message && state.message.hash === location.hash ? state.message.content : null;
      return [
        el('h1', {}, 'Job ' + job.id + ' ', badge(s)),
        message ? el('p', {class: 'notice'}, message) : null,
        el('div', {class: 'actions'}, buttons),
        job.progress && job.status !== 'completed' ? el('p', {}, progress(job.progress), job.status_text ? ' ' + job.status_text : '') : null,
        details([
          ['repr', el('span', {class: 'call', text: job.repr})],
          ['callable', job.callable],
          ['arguments', el('pre', {text: json(job.args)})],
          ['keyword arguments', Object.keys(job.kwargs).length ? el('pre', {text: json(job.kwargs)}) : '-'],
          ['queue', queueLabel(job.queue)],
          ['dispatcher / agent', job.dispatcher ? job.dispatcher + ' / ' + job.agent : '-'],
          ['begin after', time(job.begin_after)],
          ['begin by', job.begin_by_seconds === null ? '-' : seconds(job.begin_by_seconds) + ' after begin'],
          ['started', time(job.active_start)],
          ['completed', time(job.active_end)],
          ['waited', seconds(job.wait_seconds)],
          ['ran for', seconds(job.duration_seconds)],
          ['retry policy', job.retry_policy || 'default'],
          ['retries and interruptions', Object.keys(job.retry_counts).length ? json(job.retry_counts) : 'none'],
          ['quotas', job.quota_names.join(', ') || '-'],
          ['queued by', job.assigner || '-']
        ]),
        job.traceback ? [el('h2', {text: 'Traceback'}), el('pre', {class: 'traceback', text: job.traceback})] : null,
        !job.traceback && job.status === 'completed' ? [el('h2', {text: 'Result'}), el('pre', {class: 'result', text: json(job.result)})] : null,
        el('h2', {text: 'Annotations'}),
        table(['name', 'value'], annotations.map(([k, v]) => el('tr', {}, el('td', {text: k}), el('td', {}, el('pre', {text: json(v)})))), 'none'),
        job.parent ? [el('h2', {text: 'Parent'}), el('p', {}, jobLink(job.parent.id), ' ', badge(jobState(job.parent)))] : null,
        related('Children', job.children),
        related('Reports to', job.reports_to),
        related('Callbacks', job.callbacks)
      ];
    }
  };

  views.quotas = {
    load: () => get('api/quotas'),
    render(data) {
      return [el('h1', {text: 'Quotas'}),
        table(['queue', 'quota', 'size', 'held', 'fill', 'jobs'], data.items.map((q) => el('tr', {},
          el('td', {text: queueLabel(q.queue)}), el('td', {text: q.name}), el('td', {text: q.size}), el('td', {text: q.held}),
          el('td', {}, q.fill === null ? '-' : progress({fraction: q.fill, done: q.held, total: q.size}, q.held >= q.size)),
          el('td', {}, q.jobs.map((id) => [jobLink(id), ' '])))), 'no quotas')];
    }
  };

  // -- rendering and live updates -----------------------------------------

  function route() {
    const {parts, params} = parseHash();
    const name = parts[0] && views[parts[0]] ? parts[0] : 'overview';
    for (const link of document.querySelectorAll('nav a')) {
      link.classList.toggle('current', link.dataset.view === (name === 'job' ? 'jobs' : name));
    }
    return {name: name, view: views[name], params: params, parts: parts};
  }

  async function refresh() {
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    const current = route();
    const hash = location.hash;
    const main = document.getElementById('main');
    const editing = document.activeElement;
    if (editing && main.contains(editing) && /^(INPUT|SELECT|TEXTAREA)$/.test(editing.tagName)) {
      // do not replace what the user is typing in: refresh when they leave it
      state.busy = false;
      state.deferred = true;
      return;
    }
    try {
      const data = await current.view.load(current.params, current.parts);
      if (location.hash === hash) {
        main.replaceChildren(el('div', {class: 'view', 'data-view': current.name}, current.view.render(data)));
      } else {
        state.again = true;  // the page changed meanwhile
      }
    } catch (error) {
      if (location.hash === hash) {
        main.replaceChildren(el('h1', {text: 'Cannot show this page'}), el('p', {class: 'error', text: error.message}));
      }
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(); }
    }
  }

  function setLive(mode) {
    const badgeNode = document.getElementById('live');
    badgeNode.className = 'live ' + mode;
    badgeNode.textContent = mode === 'on' ? 'live' : mode;
    document.body.dataset.live = mode;
  }

  function startPolling() {
    if (state.poller === null) state.poller = setInterval(refresh, POLL_MS);
    setLive('polling');
  }

  function stopPolling() {
    if (state.poller !== null) { clearInterval(state.poller); state.poller = null; }
  }

  function listen() {
    if (!window.EventSource) { startPolling(); return; }
    const source = new EventSource('api/events');
    source.addEventListener('hello', () => { stopPolling(); setLive('on'); refresh(); });
    source.addEventListener('changed', () => refresh());
    source.onerror = () => startPolling();
  }

  function setupToken() {
    const input = document.getElementById('token');
    input.value = state.token;
    document.getElementById('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      state.token = input.value.trim();
      if (state.token) sessionStorage.setItem('zcasync-token', state.token);
      else sessionStorage.removeItem('zcasync-token');
      toast(state.token ? 'token set for actions' : 'token cleared');
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    setupToken();
    get('api').then((index) => { state.actions = index.actions; refresh(); }).catch(() => null);
    window.addEventListener('hashchange', () => {
      if (state.message && state.message.hash !== location.hash) state.message = null;
      refresh();
    });
    document.getElementById('main').addEventListener('focusout', () => {
      if (state.deferred) { state.deferred = false; setTimeout(refresh, 500); }
    });
    setInterval(refresh, BACKSTOP_MS);
    listen();
    refresh();
  });
}());
