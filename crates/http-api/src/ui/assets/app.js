// filesync's web UI: a single page over the JSON API. Routes live in the
// URL fragment (#/w/3/files/Reports), so the server serves one page.

import { api, putFile, setCsrfToken, setRenewer, onApiError, url, ApiError } from './api.js';
import { h, replace, field, button, modal, formatSize, when, uid } from './dom.js';
import { showTrash } from './trash.js';
import { showStorage } from './storage.js';

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const notices = document.getElementById('notices');

const app = {
  user: null,
  /** The open workspace's live feed and the function that reloads the page on a change. */
  live: null,
  refresh: null,
  /** Bumped on every navigation, so a slow answer for an old page is dropped. */
  generation: 0,
};

// ---- notices -------------------------------------------------------------

function notice(text, kind = 'info') {
  const item = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : undefined },
    h('span', {}, text),
    button('Dismiss', () => item.remove(), { class: 'link', 'aria-label': 'Dismiss message' }));
  notices.append(item);
  // The newest few only: a burst of actions must not cover the page.
  while (notices.children.length > 2) notices.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 12000 : 5000);
}

function showError(err) {
  notice(err instanceof Error ? err.message : String(err), 'error');
}

onApiError((err) => {
  if (err.status === 401 && app.user) {
    signedOut();
    notice('Your session has ended. Please log in again.', 'error');
  }
});

// ---- routing -------------------------------------------------------------

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function encodePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}

function folderHash(wsId, path) {
  return path ? `#/w/${wsId}/files/${encodePath(path)}` : `#/w/${wsId}`;
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '');
  if (parts[0] === 'w' && /^\d+$/.test(parts[1] || '')) {
    const id = Number(parts[1]);
    const tab = parts[2] || 'files';
    const rest = parts.slice(3).map((p) => {
      try { return decodeURIComponent(p); } catch { return p; }
    });
    return { name: 'workspace', id, tab, path: rest.join('/') };
  }
  return { name: parts[0] || 'workspaces' };
}

async function route() {
  app.generation += 1;
  const r = parseRoute();
  if (!app.user) {
    closeLive();
    if (r.name === 'register') showRegister();
    else showLogin();
    return;
  }
  renderTopbar(r);
  if (r.name !== 'workspace') closeLive();
  try {
    if (r.name === 'account') await showAccount();
    else if (r.name === 'workspace') await showWorkspace(r);
    else await showWorkspaces();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    page('Something went wrong', h('p', { class: 'error' }, err.message),
      h('p', {}, h('a', { href: '#/' }, 'Back to your workspaces')));
  }
}

/** Shows a page: a title (focused, for keyboard and screen-reader users) and its content. */
function page(title, ...content) {
  document.title = `${title} · filesync`;
  const heading = h('h1', { tabindex: '-1' }, title);
  replace(main, heading, ...content);
  if (document.activeElement === document.body || !main.contains(document.activeElement)) heading.focus();
}

function renderTopbar(r) {
  const brand = topbar.querySelector('.brand');
  if (!app.user) {
    replace(topbar, brand);
    return;
  }
  // Following the link to the page already shown reads it again.
  const link = (href, text, current) => h('a', {
    href,
    'aria-current': current ? 'page' : undefined,
    onClick: () => { if (location.hash === href) route(); },
  }, text);
  replace(topbar, brand,
    h('nav', { 'aria-label': 'Main' },
      link('#/', 'Workspaces', r.name === 'workspaces' || r.name === 'workspace'),
      link('#/account', 'Account', r.name === 'account')),
    h('div', { class: 'who' },
      h('span', { class: 'user' }, app.user.username),
      button('Log out', logOut, { class: 'secondary' })));
}

// ---- session -------------------------------------------------------------

/** How this login is listed among the user's devices. */
const BROWSER = 'Web browser';

function signedIn(session) {
  app.user = session.user;
  setCsrfToken(session.csrf_token);
}

function signedOut() {
  app.user = null;
  setCsrfToken(null);
  closeLive();
  renderTopbar({});
  go('#/login');
}

async function logOut() {
  try {
    // Revokes the token itself where the server supports it, then drops the cookie.
    await api('POST', '/logout').catch((e) => { if (e.status !== 404 && e.status !== 401) throw e; });
    await api('DELETE', '/session');
  } catch (err) {
    showError(err);
  }
  signedOut();
  notice('You are logged out.');
}

function authForm(title, fields, submitLabel, onSubmit, footer) {
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const form = h('form', { class: 'card narrow', novalidate: false },
    fields.map((f) => f.wrap), error, h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      await onSubmit();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  page(title, form, footer);
  fields[0].input.focus();
}

function showLogin() {
  renderTopbar({});
  const email = field('Email', { type: 'email', autocomplete: 'username', required: true });
  const password = field('Password', { type: 'password', autocomplete: 'current-password', required: true });
  authForm('Log in', [email, password], 'Log in', async () => {
    const session = await api('POST', '/session', { json: { email: email.input.value, password: password.input.value, device_name: BROWSER } });
    signedIn(session);
    go('#/');
  }, h('p', { class: 'center' }, 'New here? ', h('a', { href: '#/register' }, 'Create an account')));
}

function showRegister() {
  renderTopbar({});
  const first = field('First name', { autocomplete: 'given-name', required: true });
  const last = field('Last name', { autocomplete: 'family-name', required: true });
  const username = field('Username', { autocomplete: 'nickname', required: true },
    'Letters, digits, dot, dash or underscore; shown to the people you share with.');
  const email = field('Email', { type: 'email', autocomplete: 'email', required: true });
  const password = field('Password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8 },
    'At least 8 characters.');
  authForm('Create your account', [first, last, username, email, password], 'Register', async () => {
    await api('POST', '/register', {
      json: {
        first_name: first.input.value,
        last_name: last.input.value,
        username: username.input.value,
        email: email.input.value,
        password: password.input.value,
      },
    });
    const session = await api('POST', '/session', { json: { email: email.input.value, password: password.input.value, device_name: BROWSER } });
    signedIn(session);
    notice(`Welcome, ${session.user.username}!`);
    go('#/');
  }, h('p', { class: 'center' }, 'Have an account? ', h('a', { href: '#/login' }, 'Log in')));
}

// ---- account -------------------------------------------------------------

async function showAccount() {
  const gen = app.generation;
  const current = field('Current password', { type: 'password', autocomplete: 'current-password', required: true });
  const next = field('New password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8 },
    'At least 8 characters. Every device will have to log in again.');
  const again = field('Repeat the new password', { type: 'password', autocomplete: 'new-password', required: true });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'card' },
    h('h2', {}, 'Change password'), current.wrap, next.wrap, again.wrap, error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Change password')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (next.input.value !== again.input.value) {
      error.textContent = 'The two new passwords differ.';
      error.hidden = false;
      return;
    }
    try {
      const session = await api('POST', '/session/password', {
        json: { current_password: current.input.value, new_password: next.input.value },
      });
      signedIn(session);
      form.reset();
      notice('Your password was changed. Your other devices must log in again.');
      await loadDevices(devices, app.generation);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });
  const devices = h('section', { class: 'card', 'aria-labelledby': 'devices-title' },
    h('h2', { id: 'devices-title' }, 'Devices'), h('p', { class: 'muted' }, 'Loading…'));
  page('Account',
    h('section', { class: 'card' }, h('h2', {}, 'You'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Username'), h('dd', {}, app.user.username),
        h('dt', {}, 'Email'), h('dd', {}, app.user.email))),
    form, devices);
  await loadDevices(devices, gen);
}

async function loadDevices(section, gen) {
  let list;
  try {
    list = await api('GET', '/devices');
  } catch (err) {
    if (err.status === 404) {
      replace(section, h('h2', { id: 'devices-title' }, 'Devices'),
        h('p', { class: 'muted' }, 'This server does not list devices.'));
      return;
    }
    throw err;
  }
  if (gen !== app.generation) return;
  const devices = (list && list.devices) || [];
  const rows = devices.map((d) => h('tr', {},
    h('th', { scope: 'row' }, d.name || d.device_name || d.id, d.current ? ' (this browser)' : ''),
    h('td', {}, when(d.created_at)),
    h('td', {}, when(d.last_used_at || d.last_seen_at)),
    h('td', { class: 'row-actions' }, d.current ? null : button('Remove', async () => {
      const ok = await modal({
        title: `Log out ${d.name || d.device_name || 'this device'}?`,
        body: [h('p', {}, 'It stops syncing at once and must log in again.')],
        submitLabel: 'Remove',
        submitClass: 'danger',
        submit: () => api('DELETE', `/devices/${encodeURIComponent(d.id)}`),
      });
      if (ok) loadDevices(section, app.generation);
    }))));
  replace(section, h('h2', { id: 'devices-title' }, 'Devices'),
    devices.length === 0
      ? h('p', { class: 'muted' }, 'No device is logged in with the filesync agent.')
      : h('table', {},
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Device'), h('th', { scope: 'col' }, 'Logged in'),
          h('th', { scope: 'col' }, 'Last used'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        h('tbody', {}, rows)));
}

// ---- workspaces ----------------------------------------------------------

async function showWorkspaces() {
  const gen = app.generation;
  const { workspaces } = await api('GET', '/workspaces');
  if (gen !== app.generation) return;
  const name = field('Workspace name', { required: true, maxlength: 255, autocomplete: 'off' });
  const create = h('form', { class: 'inline-form' }, name.wrap,
    h('button', { type: 'submit', class: 'primary' }, 'Create workspace'));
  create.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const res = await api('POST', '/create-workspace', { json: { name: name.input.value } });
      notice(`Workspace “${res.workspace.name}” created.`);
      go(`#/w/${res.workspace.id}`);
    } catch (err) {
      showError(err);
    }
  });
  const rows = workspaces.map((w) => {
    const owner = w.role === 'owner';
    return h('tr', {},
      h('th', { scope: 'row' }, h('a', { href: `#/w/${w.id}` }, w.name)),
      h('td', { 'data-label': 'Owner' }, owner ? 'you' : w.owner.username),
      h('td', { 'data-label': 'Your role' }, roleBadge(w.role)),
      h('td', { class: 'row-actions' },
        owner ? button('Rename', () => renameWorkspace(w)) : null,
        owner ? button('Delete', () => deleteWorkspace(w), { class: 'danger' }) : null,
        owner ? null : button('Leave', () => leaveWorkspace(w), { class: 'danger' })));
  });
  page('Workspaces',
    h('section', { class: 'card', 'aria-label': 'New workspace' }, create),
    workspaces.length === 0
      ? h('p', { class: 'empty' }, 'No workspace yet. Create one above, or ask someone to share theirs with you.')
      : h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Owner'),
          h('th', { scope: 'col' }, 'Your role'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        h('tbody', {}, rows)));
}

function roleBadge(role) {
  return h('span', { class: `badge role-${role}` }, role);
}

async function renameWorkspace(w) {
  const name = field('New name', { value: w.name, required: true, maxlength: 255 });
  const ok = await modal({
    title: `Rename “${w.name}”`,
    body: [name.wrap],
    submitLabel: 'Rename',
    submit: () => api('PATCH', `/workspaces/${w.id}`, { json: { name: name.input.value } }),
  });
  if (ok) {
    notice('Workspace renamed.');
    route();
  }
}

async function deleteWorkspace(w) {
  const ok = await modal({
    title: `Delete “${w.name}”?`,
    body: [h('p', {}, 'Every member loses access at once. Files already synced stay on their computers.')],
    submitLabel: 'Delete',
    submitClass: 'danger',
    submit: () => api('DELETE', `/workspaces/${w.id}`),
  });
  if (ok) {
    notice(`Workspace “${w.name}” deleted.`);
    go('#/');
  }
}

async function leaveWorkspace(w) {
  const ok = await modal({
    title: `Leave “${w.name}”?`,
    body: [h('p', {}, 'You lose access at once; the owner can share it with you again.')],
    submitLabel: 'Leave',
    submitClass: 'danger',
    submit: () => api('DELETE', `/workspaces/${w.id}/members/${app.user.id}`),
  });
  if (ok) {
    notice(`You left “${w.name}”.`);
    go('#/');
  }
}

// ---- one workspace -------------------------------------------------------

/** The caller's entry for workspace `id` (name and role), or a 404-like error. */
async function workspaceOf(id) {
  const { workspaces } = await api('GET', '/workspaces');
  const w = workspaces.find((x) => x.id === id);
  if (!w) throw new ApiError(404, 'workspace_not_found', 'No such workspace, or it is not shared with you.');
  return w;
}

const TABS = [
  ['files', 'Files'],
  ['trash', 'Trash'],
  ['members', 'Members'],
  ['activity', 'Activity'],
  ['storage', 'Storage'],
];

async function showWorkspace(r) {
  const gen = app.generation;
  const w = await workspaceOf(r.id);
  if (gen !== app.generation) return;
  const tab = TABS.some(([t]) => t === r.tab) ? r.tab : 'files';
  const nav = h('nav', { class: 'tabs', 'aria-label': 'Workspace' },
    TABS.map(([t, label]) => h('a', {
      href: t === 'files' ? `#/w/${w.id}` : `#/w/${w.id}/${t}`,
      'aria-current': t === tab ? 'page' : undefined,
    }, label)));
  const body = h('div', { class: 'tab-body' }, h('p', { class: 'muted' }, 'Loading…'));
  page(w.name, h('p', { class: 'subtitle' }, 'Owner ', h('strong', {}, w.role === 'owner' ? 'you' : w.owner.username),
    ' · your role ', roleBadge(w.role), h('span', { class: 'live-state', id: 'live-state' })), nav, body);
  const load = {
    files: (current) => showFiles(w, r.path, body, current),
    trash: (current) => showTrash(w, body, current, tabUi),
    members: (current) => showMembers(w, body, current),
    activity: (current) => showActivity(w, body, current),
    storage: (current) => showStorage(w, body, current, tabUi),
  }[tab];
  openLive(w.id);
  // An answer is drawn only while this page is shown and no newer reload of it
  // was started (its answer may be older); navigating away drops them all.
  let latest = 0;
  const refresh = () => {
    if (app.refresh !== refresh) return Promise.resolve();
    latest += 1;
    const mine = latest;
    return load(() => gen === app.generation && mine === latest)
      .catch((err) => { if (err.status !== 401) showError(err); });
  };
  app.refresh = refresh;
  await load(() => gen === app.generation && latest === 0);
}

function canWrite(w) {
  return w.role === 'owner' || w.role === 'editor';
}

// ---- live changes --------------------------------------------------------

function closeLive() {
  if (app.live) {
    app.live.source.close();
    app.live = null;
  }
  app.refresh = null;
}

/** Follows the workspace's change feed; every change reloads what is on screen. */
function openLive(wsId) {
  if (app.live && app.live.wsId === wsId) {
    setLiveState(app.live.connected);
    return;
  }
  closeLive();
  if (typeof EventSource === 'undefined') return;
  const source = new EventSource(`/workspaces/${wsId}/events`);
  const live = { wsId, source, connected: false, opened: false, timer: null };
  app.live = live;
  const changed = () => {
    if (live.timer) return;
    live.timer = setTimeout(() => {
      live.timer = null;
      if (app.live === live && app.refresh) app.refresh();
    }, 150);
  };
  source.addEventListener('open', () => {
    // A reconnection may have missed changes: read again what is on screen.
    if (live.opened) changed();
    live.opened = true;
    live.connected = true;
    setLiveState(true);
  });
  source.addEventListener('change', changed);
  // The caller's own membership changed (a new role): draw the whole page again.
  source.addEventListener('members', () => { if (app.live === live) route(); });
  source.addEventListener('gone', () => {
    closeLive();
    notice('You no longer have access to this workspace.', 'error');
    go('#/');
  });
  source.addEventListener('error', () => { live.connected = false; setLiveState(false); });
}

function setLiveState(connected) {
  const el = document.getElementById('live-state');
  if (!el) return;
  el.className = `live-state ${connected ? 'on' : 'off'}`;
  el.textContent = connected ? ' · live' : '';
  el.title = connected ? 'Changes appear here as they happen' : '';
}

// ---- files ---------------------------------------------------------------

function basename(path) {
  const i = path.lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

function parentOf(path) {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

function join(dir, name) {
  return dir ? `${dir}/${name}` : name;
}

/** The entries directly inside `dir`: folders first, then files, by name. */
function entriesIn(files, dir) {
  const prefix = dir ? `${dir}/` : '';
  const byName = new Map();
  for (const f of files) {
    if (!f.path.startsWith(prefix) || f.path === dir) continue;
    const rest = f.path.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) {
      byName.set(rest, { ...f, name: rest });
    } else {
      const name = rest.slice(0, slash);
      if (!byName.has(name)) byName.set(name, { path: prefix + name, name, kind: 'dir', implied: true });
    }
  }
  return [...byName.values()].sort((a, b) => {
    if (a.kind !== b.kind) return a.kind === 'dir' ? -1 : 1;
    return a.name.localeCompare(b.name);
  });
}

function breadcrumbs(w, dir) {
  const parts = dir ? dir.split('/') : [];
  const items = [h('li', {}, parts.length === 0
    ? h('span', { 'aria-current': 'page' }, w.name)
    : h('a', { href: folderHash(w.id, '') }, w.name))];
  parts.forEach((part, i) => {
    const path = parts.slice(0, i + 1).join('/');
    const last = i === parts.length - 1;
    items.push(h('li', {}, last ? h('span', { 'aria-current': 'page' }, part) : h('a', { href: folderHash(w.id, path) }, part)));
  });
  return h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumbs' }, h('ol', {}, items));
}

const uploads = { list: null };

async function showFiles(w, dir, body, current) {
  const { files } = await api('GET', `/workspaces/${w.id}/files`);
  if (!current()) return;
  const entries = entriesIn(files, dir);
  const writable = canWrite(w);
  const picker = h('input', { type: 'file', multiple: true, hidden: true, 'aria-label': 'Files to upload' });
  picker.addEventListener('change', () => {
    const chosen = [...picker.files];
    picker.value = '';
    uploadFiles(w, dir, chosen.map((file) => ({ file, path: join(dir, file.name) })));
  });
  const toolbar = h('div', { class: 'toolbar' },
    breadcrumbs(w, dir),
    writable ? h('div', { class: 'toolbar-actions' },
      picker,
      button('Upload', () => picker.click(), { class: 'primary' }),
      button('New folder', () => newFolder(w, dir))) : null);
  const rows = entries.map((e) => fileRow(w, e, writable));
  const table = entries.length === 0
    ? h('p', { class: 'empty' }, dir ? 'This folder is empty.' : 'No files yet.',
      writable ? ' Upload some, or drop them here.' : '')
    : h('table', { class: 'list files' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Size'),
        h('th', { scope: 'col' }, 'Modified'), h('th', { scope: 'col' }, 'By'),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, rows));
  if (!uploads.list) uploads.list = h('ul', { class: 'uploads', 'aria-label': 'Uploads' });
  const zone = h('section', { class: 'dropzone', 'aria-label': 'Files' },
    toolbar, table,
    writable ? h('p', { class: 'hint drop-hint' }, 'Tip: drag files from your computer onto this list to upload them here.') : null,
    uploads.list);
  if (writable) makeDropTarget(zone, w, dir);
  replace(body, zone);
}

function fileRow(w, e, writable) {
  const isDir = e.kind === 'dir';
  const name = isDir
    ? h('a', { href: folderHash(w.id, e.path), class: 'entry dir' }, h('span', { class: 'icon icon-dir', 'aria-hidden': 'true' }), e.name)
    : h('span', { class: 'entry file' }, h('span', { class: 'icon icon-file', 'aria-hidden': 'true' }), e.name);
  return h('tr', { dataset: { path: e.path } },
    h('th', { scope: 'row' }, name),
    h('td', { 'data-label': 'Size' }, isDir ? '' : formatSize(e.size)),
    h('td', { 'data-label': 'Modified' }, e.modified_at ? when(e.modified_at) : ''),
    h('td', { 'data-label': 'By' }, e.modified_by || ''),
    h('td', { class: 'row-actions' },
      isDir ? null : button('Download', () => download(w, e.path)),
      isDir ? null : button('History', () => showHistory(w, e.path)),
      writable ? button('Rename', () => renameEntry(w, e)) : null,
      writable ? button('Delete', () => deleteEntry(w, e), { class: 'danger' }) : null));
}

function download(w, path, version) {
  const a = h('a', { href: url(`/workspaces/${w.id}/file`, { path, version }), download: basename(path), hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
}

async function newFolder(w, dir) {
  const name = field('Folder name', { required: true, autocomplete: 'off' });
  const ok = await modal({
    title: dir ? `New folder in ${dir}` : 'New folder',
    body: [name.wrap],
    submitLabel: 'Create folder',
    submit: () => api('POST', `/workspaces/${w.id}/mkdir`, { json: { path: join(dir, name.input.value.trim()) } }),
  });
  if (ok) {
    notice(`Folder “${name.input.value.trim()}” created.`);
    app.refresh && app.refresh();
  }
}

async function renameEntry(w, e) {
  const to = field('New name or path', { value: e.path, required: true, autocomplete: 'off' },
    'Change the name to rename; change the folders in the path to move it.');
  const ok = await modal({
    title: `Rename ${e.name}`,
    body: [to.wrap],
    submitLabel: 'Rename',
    submit: () => api('POST', `/workspaces/${w.id}/move`, { json: { from: e.path, to: to.input.value.trim() } }),
  });
  if (ok) {
    notice(`Renamed to ${to.input.value.trim()}.`);
    app.refresh && app.refresh();
  }
}

async function deleteEntry(w, e) {
  const ok = await modal({
    title: `Delete ${e.name}?`,
    body: [h('p', {}, e.kind === 'dir'
      ? 'The folder is deleted on every member’s computer. You can restore it, with everything in it, from the Trash.'
      : 'It is deleted on every member’s computer. You can restore it from the Trash.')],
    submitLabel: 'Delete',
    submitClass: 'danger',
    submit: () => api('DELETE', `/workspaces/${w.id}/file`, { query: { path: e.path } }),
  });
  if (ok) {
    notice(`${e.name} deleted.`);
    app.refresh && app.refresh();
  }
}

// ---- uploads -------------------------------------------------------------

function makeDropTarget(zone, w, dir) {
  let depth = 0;
  zone.addEventListener('dragenter', (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    e.preventDefault();
    depth += 1;
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragover', (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes('Files')) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove('dragging');
  });
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove('dragging');
    const items = await droppedFiles(e.dataTransfer, dir);
    if (items.length) uploadFiles(w, dir, items);
  });
}

/** Files dropped, folders included (walked through the entries API where the browser has it). */
async function droppedFiles(dt, dir) {
  const entries = [...(dt.items || [])]
    .map((item) => (item.kind === 'file' && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (entries.length === 0 || entries.some((x) => !x)) {
    return [...dt.files].map((file) => ({ file, path: join(dir, file.name) }));
  }
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, path: join(prefix, file.name) });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, join(prefix, entry.name));
      }
    }
  };
  for (const entry of entries) await walk(entry, dir);
  return out;
}

/** Uploads one file after the other, each with its own progress bar. */
async function uploadFiles(w, dir, items) {
  if (!uploads.list) return;
  const jobs = items.map(({ file, path }) => {
    const id = uid('up');
    const bar = h('progress', { max: Math.max(file.size, 1), value: 0, id, 'aria-label': `Uploading ${path}` });
    const state = h('span', { class: 'upload-state' }, 'waiting');
    const li = h('li', {}, h('label', { for: id }, path), bar, state);
    uploads.list.append(li);
    return { file, path, bar, state, li };
  });
  let done = 0;
  for (const job of jobs) {
    job.state.textContent = '0%';
    try {
      const res = await putFile(`/workspaces/${w.id}/file`, { path: job.path }, job.file, (loaded, total) => {
        job.bar.value = loaded;
        job.state.textContent = `${total ? Math.floor((loaded * 100) / total) : 100}%`;
      });
      job.bar.value = job.bar.max;
      done += 1;
      job.state.textContent = res && res.conflict_path ? `saved as ${res.conflict_path}` : 'done';
      job.li.classList.add('done');
      setTimeout(() => job.li.remove(), 4000);
    } catch (err) {
      job.state.textContent = `failed: ${err.message}`;
      job.li.classList.add('failed');
    }
    if (app.refresh) app.refresh();
  }
  if (done > 0) notice(done === 1 ? `Uploaded ${jobs[0].path}.` : `Uploaded ${done} files.`);
}

// ---- history and restore ---------------------------------------------------

const OPS = { put: 'changed', delete: 'deleted', move: 'moved', restore: 'restored', mkdir: 'created folder' };

async function showHistory(w, path) {
  const { versions } = await api('GET', `/workspaces/${w.id}/history`, { query: { path } }).catch((err) => {
    showError(err);
    return { versions: null };
  });
  if (!versions) return;
  const writable = canWrite(w);
  const newest = versions[0];
  const rows = versions.map((v) => h('tr', {},
    h('th', { scope: 'row' }, `#${v.version}`),
    h('td', { 'data-label': 'Change' }, OPS[v.op] || v.op, v.from_path ? ` from ${v.from_path}` : ''),
    h('td', { 'data-label': 'Size' }, v.deleted || v.kind === 'dir' ? '—' : formatSize(v.size)),
    h('td', { 'data-label': 'By' }, v.author || 'a former member'),
    h('td', { 'data-label': 'When' }, when(v.created_at)),
    h('td', { class: 'row-actions' },
      !v.deleted && v.kind === 'file' ? button('Download', () => download(w, path, v.version)) : null,
      writable && !v.deleted && v.kind === 'file' && v !== newest
        ? button('Restore', async () => {
          try {
            await restoreVersion(w, path, v.version);
            dialog.querySelector('button.secondary').click();
          } catch (err) {
            showError(err);
          }
        })
        : (v === newest ? h('span', { class: 'muted' }, 'current') : null))));
  const table = h('table', { class: 'list history' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Version'), h('th', { scope: 'col' }, 'Change'),
      h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, 'By'), h('th', { scope: 'col' }, 'When'),
      h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', {}, rows));
  const shown = modal({ title: `History of ${path}`, body: [table], wide: true });
  const { dialog } = shown;
  await shown;
}

async function restoreVersion(w, path, version) {
  const res = await api('POST', `/workspaces/${w.id}/restore`, { json: { path, version } });
  notice(`Restored ${path} to version #${version}.`);
  if (app.refresh) app.refresh();
  return res;
}

// ---- tabs in modules of their own (trash.js, storage.js) -------------------

/** What those tabs use of the page. */
const tabUi = {
  notice,
  showError,
  showHistory,
  canWrite,
  refresh: () => { if (app.refresh) app.refresh(); },
};

// ---- members -------------------------------------------------------------

async function showMembers(w, body, current) {
  const res = await api('GET', '/view-shared-users', { query: { workspace_id: w.id } });
  if (!current()) return;
  const owner = w.role === 'owner';
  const members = res.users || [];
  const invitations = res.invitations || [];
  const roleHead = uid('role');
  const rows = members.map((m) => {
    const me = m.user_id === app.user.id;
    let roleCell = roleBadge(m.role);
    let change = null;
    if (owner && m.role !== 'owner') {
      const nameId = uid('member');
      const select = h('select', { 'aria-labelledby': `${roleHead} ${nameId}` },
        ['editor', 'viewer'].map((r) => h('option', { value: r, selected: r === m.role }, r)));
      roleCell = select;
      change = button('Change role', async () => {
        try {
          await api('PUT', `/workspaces/${w.id}/members/${m.user_id}`, { json: { role: select.value } });
          notice(`${m.username} is now ${select.value === 'editor' ? 'an editor' : 'a viewer'}.`);
          app.refresh && app.refresh();
        } catch (err) {
          showError(err);
        }
      });
      return memberRow(m, nameId, roleCell, [change,
        button('Remove', () => removeMember(w, m), { class: 'danger' })]);
    }
    return memberRow(m, uid('member'), roleCell, [
      me && m.role !== 'owner' ? button('Leave', () => leaveWorkspace(w), { class: 'danger' }) : null]);
  });
  const inviteRows = invitations.map((inv) => h('tr', { class: 'pending' },
    h('th', { scope: 'row' }, inv.email),
    h('td', { 'data-label': 'Email' }, 'invited, no account yet'),
    h('td', { 'data-label': 'Role' }, roleBadge(inv.role)),
    h('td', { class: 'row-actions' }, owner
      ? button('Remove', () => cancelInvitation(w, inv), { class: 'danger', 'aria-label': `Remove invitation of ${inv.email}` })
      : null)));
  const parts = [];
  if (owner) {
    const email = field('Email', { type: 'email', required: true, autocomplete: 'off' });
    const role = field('Role', { tag: 'select', value: 'editor', options: [['editor', 'Editor: can change files'], ['viewer', 'Viewer: can only read']] });
    const form = h('form', { class: 'inline-form share' }, email.wrap, role.wrap,
      h('button', { type: 'submit', class: 'primary' }, 'Share'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const added = await api('POST', '/add-user', { json: { workspace_id: w.id, email: email.input.value, role: role.input.value } });
        notice(added && added.invitation
          ? `${email.input.value} has no account yet: they join when they register.`
          : `Shared with ${email.input.value}.`);
        app.refresh && app.refresh();
      } catch (err) {
        showError(err);
      }
    });
    parts.push(h('section', { class: 'card', 'aria-label': 'Share this workspace' },
      h('h2', {}, 'Share this workspace'), form));
  } else {
    parts.push(h('p', { class: 'muted' }, 'Only the owner can add or remove members. ',
      button('Leave', () => leaveWorkspace(w), { class: 'danger' })));
  }
  parts.push(h('table', { class: 'list members' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Member'), h('th', { scope: 'col' }, 'Email'),
      h('th', { scope: 'col', id: roleHead }, 'Role'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', {}, rows, inviteRows)));
  replace(body, ...parts);
}

function memberRow(m, nameId, roleCell, actions) {
  return h('tr', { dataset: { user: m.username } },
    h('th', { scope: 'row', id: nameId }, m.username, m.user_id === app.user.id ? ' (you)' : ''),
    h('td', { 'data-label': 'Email' }, m.email),
    h('td', { 'data-label': 'Role' }, roleCell),
    h('td', { class: 'row-actions' }, actions));
}

async function removeMember(w, m) {
  const ok = await modal({
    title: `Remove ${m.username} from “${w.name}”?`,
    body: [h('p', {}, 'They lose access at once; their computers stop syncing this workspace and keep the files they have.')],
    submitLabel: 'Remove',
    submitClass: 'danger',
    submit: () => api('DELETE', `/workspaces/${w.id}/members/${m.user_id}`),
  });
  if (ok) {
    notice(`${m.username} was removed.`);
    app.refresh && app.refresh();
  }
}

async function cancelInvitation(w, inv) {
  try {
    await api('DELETE', `/workspaces/${w.id}/invitations/${inv.id}`);
    notice(`Invitation of ${inv.email} cancelled.`);
    app.refresh && app.refresh();
  } catch (err) {
    showError(err);
  }
}

// ---- activity and presence -------------------------------------------------

function deviceLabel(deviceId) {
  if (!deviceId) return '';
  return deviceId === 'http-api' ? 'web · ' : `device ${deviceId.slice(0, 8)} · `;
}

async function showActivity(w, body, current) {
  const [presence, activity] = await Promise.all([
    api('GET', `/workspaces/${w.id}/presence`).catch((err) => ({ error: err })),
    api('GET', `/workspaces/${w.id}/activity`, { query: { limit: 100 } }).catch((err) => ({ error: err })),
  ]);
  if (!current()) return;
  let online;
  if (presence.error) {
    online = h('p', { class: 'muted' }, `Cannot tell who is online: ${presence.error.message}`);
  } else if (presence.source === 'none') {
    online = h('p', { class: 'muted' }, 'This server does not track who is online.');
  } else if (presence.devices.length === 0) {
    online = h('p', { class: 'empty' }, 'No device is syncing this workspace right now.');
  } else {
    online = h('ul', { class: 'devices' }, presence.devices.map((d) => h('li', {},
      h('span', { class: 'dot', 'aria-hidden': 'true' }), h('strong', {}, d.username), ` on ${d.device_name} · since `,
      when(d.connected_at))));
  }
  let feed;
  if (activity.error) {
    feed = h('p', { class: 'muted' }, activity.error.status === 404 && activity.error.code !== 'workspace_not_found'
      ? 'This server has no activity feed yet.' : `Cannot load the activity: ${activity.error.message}`);
  } else if ((activity.entries || []).length === 0) {
    feed = h('p', { class: 'empty' }, 'Nothing has happened here yet.');
  } else {
    feed = h('ol', { class: 'feed' }, activity.entries.map((e) => h('li', {},
      h('strong', {}, e.author || 'a former member'),
      ` ${e.op === 'put' && e.kind === 'dir' ? 'created folder' : (OPS[e.op] || e.op)} `,
      h('span', { class: 'path' }, e.path),
      e.from_path ? ` (from ${e.from_path})` : '',
      h('span', { class: 'muted' }, ' · ', deviceLabel(e.device_id), when(e.time)))));
  }
  replace(body,
    h('section', { class: 'card', 'aria-labelledby': 'online-title' }, h('h2', { id: 'online-title' }, 'Online now'), online),
    h('section', { class: 'card', 'aria-labelledby': 'activity-title' }, h('h2', { id: 'activity-title' }, 'Recent activity'), feed));
}

// ---- start -----------------------------------------------------------------

/** A new access token from the browser's device credential; false if there is none any more. */
async function renew() {
  try {
    signedIn(await api('POST', '/session/refresh'));
    return true;
  } catch {
    return false;
  }
}

async function boot() {
  try {
    signedIn(await api('GET', '/session'));
  } catch (err) {
    if (err.status !== 401) showError(err);
    else await renew();
  }
  setRenewer(async () => (app.user ? renew() : false));
  window.addEventListener('hashchange', route);
  await route();
}

boot();
