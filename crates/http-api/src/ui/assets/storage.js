// The Storage tab of a workspace: how many bytes it keeps (current files,
// older versions, trash: the `usage` of GET /workspaces) and how long it keeps
// older versions and deleted files (GET /workspaces/{id}/retention), which its
// owner can change (PUT, the same route).

import { api } from './api.js';
import { h, replace, field, formatSize } from './dom.js';

/**
 * Draws the storage of workspace `w` into `body`. `ui` is the page's
 * `{ notice, showError, refresh }`; `current()` says whether the answer may
 * still be drawn. Read again on every refresh (a change, a saved setting).
 */
export async function showStorage(w, body, current, ui) {
  const [retention, { workspaces }] = await Promise.all([
    api('GET', `/workspaces/${w.id}/retention`),
    api('GET', '/workspaces'),
  ]);
  if (!current()) return;
  const u = (workspaces.find((x) => x.id === w.id) || w).usage || { live_bytes: 0, history_bytes: 0, trash_bytes: 0 };
  const figure = (label, bytes) => [h('dt', {}, label), h('dd', {}, formatSize(bytes))];
  const usage = h('section', { class: 'card', 'aria-labelledby': 'usage-title' },
    h('h2', { id: 'usage-title' }, 'Space used'),
    h('dl', { class: 'facts' },
      figure('Current files', u.live_bytes),
      figure('Older versions', u.history_bytes),
      figure('Trash', u.trash_bytes),
      figure('Total', u.live_bytes + u.history_bytes + u.trash_bytes)),
    h('p', { class: 'hint' }, 'The sizes of the files kept. Content shared between versions is stored once, and compressed, so less space is used.'));
  replace(body, usage, retentionCard(w, retention, ui));
}

/** "30 days (the server's default)". */
function period(days, isDefault, zero) {
  const text = days === 0 ? zero : `${days} ${days === 1 ? 'day' : 'days'}`;
  return isDefault ? `${text} (the server’s default)` : text;
}

function retentionCard(w, r, ui) {
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'Older versions kept'),
    h('dd', {}, period(r.keep_days, r.keep_days_is_default, 'none: only the current version of each file')),
    h('dt', {}, 'Deleted files kept'),
    h('dd', {}, period(r.trash_days, r.trash_days_is_default, 'until the next clean-up only')));
  const card = h('section', { class: 'card', 'aria-labelledby': 'retention-title' },
    h('h2', { id: 'retention-title' }, 'Retention'), facts);
  if (w.role !== 'owner') {
    card.append(h('p', { class: 'hint' }, 'The owner of the workspace decides how long it keeps them.'));
    return card;
  }
  const days = (label, value, isDefault) => field(label,
    { type: 'number', min: 0, max: 36500, step: 1, inputmode: 'numeric', value: isDefault ? '' : String(value), placeholder: String(value) },
    'Days, 0 to 36500. Leave empty for the server’s default.');
  const keep = days('Keep older versions (days)', r.keep_days, r.keep_days_is_default);
  const trash = days('Keep deleted files (days)', r.trash_days, r.trash_days_is_default);
  const form = h('form', { class: 'inline-form' }, keep.wrap, trash.wrap,
    h('button', { type: 'submit', class: 'primary' }, 'Save retention'));
  const asDays = (input) => (input.value.trim() === '' ? null : Number(input.value));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('PUT', `/workspaces/${w.id}/retention`,
        { json: { keep_days: asDays(keep.input), trash_days: asDays(trash.input) } });
      ui.notice('Retention saved. It applies from the next clean-up.');
      ui.refresh();
    } catch (err) {
      ui.showError(err);
    }
  });
  card.append(h('p', { class: 'hint' },
    'Every version younger than the first period is kept; up to three times as old, one a week; older ones are dropped. The current version of a file is always kept.'),
  form);
  return card;
}
