// The Trash tab of a workspace: its deleted files and folders, newest first,
// a page at a time (GET /workspaces/{id}/trash), each restorable as it last
// was — a folder with everything under it — until retention drops it
// (POST /workspaces/{id}/trash/restore).

import { api } from './api.js';
import { h, replace, button, formatSize, when } from './dom.js';

/** Entries asked for per page. */
const PAGE = 50;

/**
 * Draws the trash of workspace `w` into `body`. `ui` is the page's
 * `{ notice, showError, showHistory, canWrite, refresh }`; `current()` says
 * whether the answer may still be drawn.
 */
export async function showTrash(w, body, current, ui) {
  const first = await api('GET', `/workspaces/${w.id}/trash`, { query: { limit: PAGE } });
  if (!current()) return;
  const writable = ui.canWrite(w);
  const tbody = h('tbody', {});
  const more = h('p', {});
  const addPage = (res) => {
    tbody.append(...res.entries.map((e) => trashRow(w, e, writable, ui)));
    replace(more, res.next_before_seq
      ? button('Show older deletions', async (ev) => {
        ev.target.disabled = true;
        try {
          addPage(await api('GET', `/workspaces/${w.id}/trash`, { query: { limit: PAGE, before_seq: res.next_before_seq } }));
        } catch (err) {
          ev.target.disabled = false;
          ui.showError(err);
        }
      })
      : null);
  };
  addPage(first);
  const days = first.trash_days;
  const kept = days === 0
    ? 'Deleted files and folders stay here until the next clean-up only.'
    : `Deleted files and folders stay here ${days === 1 ? 'one day' : `${days} days`}, then they are gone for good.`;
  replace(body, h('section', { 'aria-label': 'Trash' },
    h('p', { class: 'muted' }, kept, writable
      ? ' Restoring brings a file back as it last was on every member’s computer; restoring a folder brings back everything deleted under it.'
      : ''),
    first.entries.length === 0 ? h('p', { class: 'empty' }, 'The trash is empty.')
      : h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Deleted item'), h('th', { scope: 'col' }, 'Deleted'),
          h('th', { scope: 'col' }, 'By'), h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, 'Kept until'),
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        tbody),
    more));
}

function trashRow(w, e, writable, ui) {
  const isDir = e.kind === 'dir';
  const name = h('span', { class: `entry ${isDir ? 'dir' : 'file'}` },
    h('span', { class: `icon icon-${isDir ? 'dir' : 'file'}`, 'aria-hidden': 'true' }), e.path);
  return h('tr', { dataset: { path: e.path } },
    h('th', { scope: 'row' }, name),
    h('td', { 'data-label': 'Deleted' }, when(e.deleted_at)),
    h('td', { 'data-label': 'By' }, e.deleted_by || 'a former member'),
    h('td', { 'data-label': 'Size' }, isDir ? 'folder' : formatSize(e.size)),
    h('td', { 'data-label': 'Kept until' }, when(e.expires_at)),
    h('td', { class: 'row-actions' },
      writable ? button(isDir ? 'Restore folder' : 'Restore', () => restore(w, e.path, ui)) : null,
      isDir ? null : button('History', () => ui.showHistory(w, e.path))));
}

async function restore(w, path, ui) {
  try {
    const { restored } = await api('POST', `/workspaces/${w.id}/trash/restore`, { json: { path } });
    ui.notice(restored.length > 1 ? `Restored ${path} and ${restored.length - 1} more.` : `Restored ${path}.`);
    ui.refresh();
  } catch (err) {
    ui.showError(err);
  }
}
