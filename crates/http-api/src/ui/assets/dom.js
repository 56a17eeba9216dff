// Small DOM helpers. Every piece of text from the server goes in through
// text nodes or attributes, never parsed as HTML, so names cannot inject markup.

/** Creates an element: h('button', {type: 'button', onClick: f}, 'Rename'). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A fresh id for label/aria references. */
export function uid(prefix = 'id') {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled input: a visible <label> bound to the input. */
export function field(label, attrs = {}, hint) {
  const id = attrs.id || uid('f');
  const hintId = hint ? `${id}-hint` : undefined;
  const input = attrs.tag === 'select'
    ? h('select', { ...attrs, tag: undefined, options: undefined, id, 'aria-describedby': hintId },
      (attrs.options || []).map(([value, text]) => h('option', { value, selected: value === attrs.value }, text)))
    : h('input', { type: 'text', ...attrs, id, 'aria-describedby': hintId });
  const wrap = h('div', { class: 'field' },
    h('label', { for: id }, label),
    input,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
  return { wrap, input };
}

/** A button named by its action. */
export function button(label, onClick, attrs = {}) {
  return h('button', { type: 'button', onClick, ...attrs }, label);
}

/**
 * A modal dialog (native <dialog>: focus moves into it, Escape closes it,
 * focus returns to the opener). `submit` runs on the primary button; if it
 * throws, the message shows in the dialog and it stays open.
 */
export function modal({ title, body = [], submitLabel, submitClass = 'primary', submit, wide = false }) {
  const titleId = uid('dlg');
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const primary = submitLabel ? h('button', { type: 'submit', class: submitClass }, submitLabel) : null;
  const cancel = h('button', { type: 'button', class: 'secondary' }, submitLabel ? 'Cancel' : 'Close');
  const form = h('form', { method: 'dialog' },
    h('h2', { id: titleId }, title),
    body,
    error,
    h('div', { class: 'dialog-actions' }, primary, cancel));
  const dialog = h('dialog', { 'aria-labelledby': titleId, class: wide ? 'wide' : '' }, form);
  document.body.append(dialog);
  const shown = new Promise((resolve) => {
    let done = false;
    const close = (result) => {
      if (done) return;
      done = true;
      dialog.close();
      dialog.remove();
      resolve(result);
    };
    cancel.addEventListener('click', () => close(undefined));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); close(undefined); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!submit) { close(true); return; }
      error.hidden = true;
      if (primary) primary.disabled = true;
      try {
        const result = await submit();
        close(result ?? true);
      } catch (err) {
        error.textContent = err.message || String(err);
        error.hidden = false;
      } finally {
        if (primary) primary.disabled = false;
      }
    });
    dialog.showModal();
    const first = dialog.querySelector('input, select, textarea');
    if (first) first.focus();
  });
  shown.dialog = dialog;
  return shown;
}

/** "1.4 MB". */
export function formatSize(bytes) {
  if (bytes === undefined || bytes === null) return '';
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let n = bytes;
  let unit = 'B';
  for (const u of units) {
    if (n < 1000) break;
    n /= 1000;
    unit = u;
  }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${unit}`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** A <time> that says "3 minutes ago", with the exact time as its tooltip. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const secs = Math.round((date.getTime() - Date.now()) / 1000);
  const abs = Math.abs(secs);
  let text;
  if (abs < 45) text = relative.format(0, 'second');
  else if (abs < 3600) text = relative.format(Math.round(secs / 60), 'minute');
  else if (abs < 86400) text = relative.format(Math.round(secs / 3600), 'hour');
  else if (abs < 86400 * 7) text = relative.format(Math.round(secs / 86400), 'day');
  else text = absolute.format(date);
  return h('time', { datetime: iso, title: absolute.format(date) }, text);
}
