// The web UI's browser story: two people use filesync only through the
// browser while a real `filesync sync` agent keeps a folder in sync.
//
// Run by crates/client/tests/browser_ui.rs as `node story.mjs <base url>`,
// which starts the servers and, when this script prints
// `@@agent <email> <password> <workspace>`, an agent, answering with the
// agent's folder on stdin. Screenshots go to $STORY_SHOTS.
//
// Every control is found by its role and accessible name (or its visible
// label): that is the UI's accessibility contract, and this story checks it.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import path from 'node:path';

const base = process.argv[2];
if (!base) throw new Error('usage: node story.mjs <base url>');
const shots = process.env.STORY_SHOTS || path.resolve('shots');
fs.mkdirSync(shots, { recursive: true });
const executablePath = process.env.STORY_CHROMIUM || '/usr/bin/chromium';

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
/** Asks the Rust side for something; resolves with its one-line answer. */
async function ask(request) {
  console.log(`@@${request}`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to ${request}`);
  return value;
}

function step(text) {
  console.log(`story: ${text}`);
}

let shotCount = 0;
async function shot(page, name) {
  shotCount += 1;
  await page.screenshot({ path: path.join(shots, `${String(shotCount).padStart(2, '0')}-${name}.png`), fullPage: true });
}

function fail(message) {
  throw new Error(message);
}

/** Polls `check` (which returns truthy when done) for up to `ms`. */
async function eventually(what, check, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) fail(`timed out waiting for: ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function readIf(file) {
  try { return fs.readFileSync(file, 'utf8'); } catch { return null; }
}

// ---- the browser -----------------------------------------------------------

// playwright gives every launch a new, empty profile (--user-data-dir) under
// $TMPDIR, which the Rust test points into its own scratch directory.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-quic', '--no-first-run', '--disable-sync'],
});

const problems = [];
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on('console', (msg) => {
    // 401 before logging in and 404s for routes a server may lack are expected answers, not faults.
    if (msg.type() === 'error' && !/status of (401|404)/.test(msg.text())) problems.push(`${name}: console: ${msg.text()}`);
  });
  return page;
}

const row = (page, name) => page.getByRole('row').filter({ has: page.getByRole('rowheader', { name, exact: true }) });
const dialog = (page) => page.getByRole('dialog');

async function register(page, { first, last, username, email, password }) {
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Log in' }).waitFor();
  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.getByLabel('First name').fill(first);
  await page.getByLabel('Last name').fill(last);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  if (username === 'alice') await shot(page, 'register');
  await page.getByRole('button', { name: 'Register' }).click();
  await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
}

async function openWorkspace(page, name) {
  await page.getByRole('link', { name: 'Workspaces' }).click();
  await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
  await page.getByRole('link', { name, exact: true }).click();
  await page.getByRole('heading', { name, exact: true }).waitFor();
}

// ---- the story -------------------------------------------------------------

const alice = await person('alice');
const bob = await person('bob');
const ALICE = { first: 'Alice', last: 'Liddell', username: 'alice', email: 'alice@example.com', password: 'alice-secret-1' };
const BOB = { first: 'Bob', last: 'Builder', username: 'bob', email: 'bob@example.com', password: 'bob-secret-12' };

step('the login page');
await alice.goto(`${base}/`);
await alice.getByRole('heading', { name: 'Log in' }).waitFor();
await shot(alice, 'login');

step('two people register');
await register(alice, ALICE);
await shot(alice, 'workspaces-empty');
await register(bob, BOB);

step('bob logs out, then logs in again with the keyboard only');
await bob.getByRole('button', { name: 'Log out' }).click();
await bob.getByRole('heading', { name: 'Log in' }).waitFor();
// The email field has the focus; Tab to the password, Enter submits.
await bob.keyboard.type(BOB.email);
await bob.keyboard.press('Tab');
await bob.keyboard.type(BOB.password);
await bob.keyboard.press('Enter');
await bob.getByRole('heading', { name: 'Workspaces' }).waitFor();
const me = await bob.evaluate(async () => (await fetch('/session')).json());
if (me.user.username !== 'bob') fail(`bob's session belongs to ${me.user.username}`);

step('a wrong password is refused with a message');
const stranger = await person('stranger');
await stranger.goto(`${base}/`);
await stranger.getByLabel('Email').fill(ALICE.email);
await stranger.getByLabel('Password').fill('not-the-password');
await stranger.getByRole('button', { name: 'Log in' }).click();
await stranger.getByRole('alert').filter({ hasText: 'incorrect' }).waitFor();
await shot(stranger, 'login-refused');
await stranger.context().close();

step('alice creates a workspace');
await alice.getByLabel('Workspace name').fill('Team');
await alice.getByRole('button', { name: 'Create workspace' }).click();
await alice.getByRole('heading', { name: 'Team', exact: true }).waitFor();
await shot(alice, 'workspace-empty');

step('an agent syncs the workspace to a folder');
const folder = await ask(`agent ${ALICE.email} ${ALICE.password} Team`);

step("the agent's new file appears in the page");
fs.mkdirSync(path.join(folder, 'Reports'), { recursive: true });
fs.writeFileSync(path.join(folder, 'notes.txt'), 'version one\n');
fs.writeFileSync(path.join(folder, 'Reports', 'q1.txt'), 'first quarter\n');
await eventually('notes.txt listed', async () => {
  await alice.reload();
  await alice.getByRole('heading', { name: 'Team', exact: true }).waitFor();
  return (await row(alice, 'notes.txt').count()) === 1 && (await alice.getByRole('link', { name: 'Reports' }).count()) === 1;
});
await shot(alice, 'files');

step('folders and breadcrumbs');
await alice.getByRole('link', { name: 'Reports' }).click();
await row(alice, 'q1.txt').waitFor();
const crumbs = alice.getByRole('navigation', { name: 'Breadcrumbs' });
await crumbs.getByText('Reports').waitFor();
await shot(alice, 'folder');
await crumbs.getByRole('link', { name: 'Team' }).click();
await row(alice, 'notes.txt').waitFor();

step('two more versions, then the history');
for (const text of ['the second version\n', 'version three, the last one\n']) {  // sizes differ: the row shows it
  const before = await row(alice, 'notes.txt').textContent();
  fs.writeFileSync(path.join(folder, 'notes.txt'), text);
  await eventually('the new version listed', async () => {
    await alice.reload();
    await row(alice, 'notes.txt').waitFor();
    return (await row(alice, 'notes.txt').textContent()) !== before;
  });
}
await row(alice, 'notes.txt').getByRole('button', { name: 'History' }).click();
const history = dialog(alice);
await history.getByRole('heading', { name: 'History of notes.txt' }).waitFor();
const versions = history.getByRole('row').filter({ has: alice.getByRole('rowheader', { name: /^#\d+$/ }) });
await eventually('three versions', async () => (await versions.count()) === 3);
await shot(alice, 'history');

step('restore the first version: it reaches the agent');
await versions.last().getByRole('button', { name: 'Restore' }).click();
await history.waitFor({ state: 'detached' });
await eventually('the agent has version one again', () => readIf(path.join(folder, 'notes.txt')) === 'version one\n');

step('alice shares the workspace with bob as a viewer');
await alice.getByRole('link', { name: 'Members' }).click();
await alice.getByRole('heading', { name: 'Share this workspace' }).waitFor();
await alice.getByLabel('Email').fill(BOB.email);
await alice.getByLabel('Role', { exact: true }).selectOption('viewer');
await alice.getByRole('button', { name: 'Share' }).click();
await row(alice, 'bob').waitFor();
await shot(alice, 'members');

step('bob sees it, as a viewer: he can read, not change');
await bob.reload();
await row(bob, 'Team').getByText('viewer').waitFor();
await shot(bob, 'workspaces-shared');
await openWorkspace(bob, 'Team');
await row(bob, 'notes.txt').waitFor();
if (await bob.getByRole('button', { name: 'Upload' }).count()) fail('a viewer is offered Upload');
if (await row(bob, 'notes.txt').getByRole('button', { name: 'Delete' }).count()) fail('a viewer is offered Delete');
await row(bob, 'notes.txt').getByRole('button', { name: 'History' }).waitFor();

step('on a phone');
await alice.setViewportSize({ width: 390, height: 844 });
await alice.getByRole('link', { name: 'Files', exact: true }).click();
await row(alice, 'notes.txt').waitFor();
await shot(alice, 'phone-files');
await alice.setViewportSize({ width: 1200, height: 800 });

step('alice logs out');
await alice.getByRole('button', { name: 'Log out' }).click();
await alice.getByRole('heading', { name: 'Log in' }).waitFor();
const after = await alice.evaluate(async () => (await fetch('/session')).status);
if (after !== 401) fail(`after logging out, GET /session answers ${after}`);

if (problems.length) fail(`the pages reported problems:\n${problems.join('\n')}`);
await browser.close();
step('done');
process.exit(0);
