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
const pages = new Map();
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  pages.set(name, page);
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

let alice;
let bob;
async function story() {
  alice = await person('alice');
  bob = await person('bob');
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

  step("the agent's new file appears in the open page by itself (no reload)");
  await alice.locator('.live-state.on').waitFor(); // the page follows the workspace's events
  await alice.evaluate(() => { window.storyMark = 'not reloaded'; });
  fs.mkdirSync(path.join(folder, 'Reports'), { recursive: true });
  fs.writeFileSync(path.join(folder, 'notes.txt'), 'version one\n');
  fs.writeFileSync(path.join(folder, 'Reports', 'q1.txt'), 'first quarter\n');
  await row(alice, 'notes.txt').waitFor();
  await alice.getByRole('link', { name: 'Reports' }).waitFor();
  if (await alice.evaluate(() => window.storyMark) !== 'not reloaded') fail('the page was reloaded');
  await shot(alice, 'files');

  step('folders and breadcrumbs');
  await alice.getByRole('link', { name: 'Reports' }).click();
  await row(alice, 'q1.txt').waitFor();
  const crumbs = alice.getByRole('navigation', { name: 'Breadcrumbs' });
  await crumbs.getByText('Reports').waitFor();
  await shot(alice, 'folder');
  await crumbs.getByRole('link', { name: 'Team' }).click();
  await row(alice, 'notes.txt').waitFor();

  step('two more versions, each shown live, then the history');
  for (const text of ['the second version\n', 'version three, the last one\n']) { // sizes differ: the row shows it
    const before = await row(alice, 'notes.txt').textContent();
    fs.writeFileSync(path.join(folder, 'notes.txt'), text);
    await eventually('the new version listed', async () => (await row(alice, 'notes.txt').textContent()) !== before);
  }
  if (await alice.evaluate(() => window.storyMark) !== 'not reloaded') fail('the page was reloaded');
  await row(alice, 'notes.txt').getByRole('button', { name: 'History' }).click();
  const history = dialog(alice);
  await history.getByRole('heading', { name: 'History of notes.txt' }).waitFor();
  const versions = history.getByRole('row').filter({ has: alice.getByRole('rowheader', { name: /^#\d+$/ }) });
  await eventually('three versions', async () => (await versions.count()) === 3);
  await shot(alice, 'history');

  step('download the first version from the history');
  const oldDownload = alice.waitForEvent('download');
  await versions.last().getByRole('button', { name: 'Download' }).click();
  const oldSaved = path.join(shots, '..', 'downloaded-version-one.txt');
  await (await oldDownload).saveAs(oldSaved);
  if (fs.readFileSync(oldSaved, 'utf8') !== 'version one\n') fail(`version one downloads as ${fs.readFileSync(oldSaved, 'utf8')}`);
  fs.rmSync(oldSaved);

  step('restore the first version: it reaches the agent');
  await versions.last().getByRole('button', { name: 'Restore' }).click();
  await history.waitFor({ state: 'detached' });
  await eventually('the agent has version one again', () => readIf(path.join(folder, 'notes.txt')) === 'version one\n');

  step('upload with the Upload button: the file lands in the agent\'s folder');
  const chooser = alice.waitForEvent('filechooser');
  await alice.getByRole('button', { name: 'Upload' }).click();
  await (await chooser).setFiles([{ name: 'hello.txt', mimeType: 'text/plain', buffer: Buffer.from('hello from the browser\n') }]);
  await row(alice, 'hello.txt').waitFor();
  await eventually('hello.txt in the agent folder', () => readIf(path.join(folder, 'hello.txt')) === 'hello from the browser\n');

  step('upload a larger file: progress, then the agent has every byte');
  const big = Buffer.alloc(6 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 1) big[i] = (i * 7 + (i >> 12)) & 0xff;
  const chooser2 = alice.waitForEvent('filechooser');
  await alice.getByRole('button', { name: 'Upload' }).click();
  await (await chooser2).setFiles([{ name: 'big.bin', mimeType: 'application/octet-stream', buffer: big }]);
  await alice.getByRole('progressbar', { name: 'Uploading big.bin' }).waitFor({ state: 'attached' });
  await shot(alice, 'upload-progress');
  await row(alice, 'big.bin').waitFor();
  await eventually('big.bin in the agent folder', () => {
    try { return fs.readFileSync(path.join(folder, 'big.bin')).equals(big); } catch { return false; }
  }, 60000);

  step('upload by dropping a file on the list');
  const dropped = await alice.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped in\n'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  const zone = alice.getByRole('region', { name: 'Files' });
  await zone.dispatchEvent('dragenter', { dataTransfer: dropped });
  await zone.dispatchEvent('dragover', { dataTransfer: dropped });
  await shot(alice, 'drag-over');
  await zone.dispatchEvent('drop', { dataTransfer: dropped });
  await row(alice, 'dropped.txt').waitFor();
  await eventually('dropped.txt in the agent folder', () => readIf(path.join(folder, 'dropped.txt')) === 'dropped in\n');

  step('download a file');
  const download = alice.waitForEvent('download');
  await row(alice, 'notes.txt').getByRole('button', { name: 'Download' }).click();
  const saved = path.join(shots, '..', 'downloaded-notes.txt');
  await (await download).saveAs(saved);
  if (fs.readFileSync(saved, 'utf8') !== 'version one\n') fail(`the download has ${fs.readFileSync(saved, 'utf8')}`);
  fs.rmSync(saved);

  step('new folder, then move a file into it');
  await alice.getByRole('button', { name: 'New folder' }).click();
  await dialog(alice).getByLabel('Folder name').fill('Plans');
  await shot(alice, 'new-folder');
  await dialog(alice).getByRole('button', { name: 'Create folder' }).click();
  await alice.getByRole('link', { name: 'Plans', exact: true }).waitFor();
  await eventually('the agent has the folder Plans', () => fs.existsSync(path.join(folder, 'Plans')));
  await row(alice, 'hello.txt').getByRole('button', { name: 'Rename' }).click();
  await dialog(alice).getByLabel('New name or path').fill('Plans/hello-renamed.txt');
  await shot(alice, 'rename');
  await dialog(alice).getByRole('button', { name: 'Rename' }).click();
  await eventually('hello.txt moved in the agent folder', () => readIf(path.join(folder, 'Plans', 'hello-renamed.txt')) === 'hello from the browser\n'
    && !fs.existsSync(path.join(folder, 'hello.txt')));
  await alice.getByRole('link', { name: 'Plans', exact: true }).click();
  await row(alice, 'hello-renamed.txt').waitFor();
  await alice.getByRole('navigation', { name: 'Breadcrumbs' }).getByRole('link', { name: 'Team' }).click();

  step('delete a file, see it in the trash, restore it');
  await row(alice, 'dropped.txt').getByRole('button', { name: 'Delete' }).click();
  await shot(alice, 'delete-confirm');
  await dialog(alice).getByRole('button', { name: 'Delete' }).click();
  await eventually('dropped.txt gone from the page', async () => (await row(alice, 'dropped.txt').count()) === 0);
  await eventually('dropped.txt gone from the agent folder', () => !fs.existsSync(path.join(folder, 'dropped.txt')));
  await alice.getByRole('link', { name: 'Trash' }).click();
  await row(alice, 'dropped.txt').getByRole('cell', { name: 'alice' }).waitFor();
  await shot(alice, 'trash');
  await row(alice, 'dropped.txt').getByRole('button', { name: 'Restore' }).click();
  await eventually('dropped.txt back in the agent folder', () => readIf(path.join(folder, 'dropped.txt')) === 'dropped in\n');
  await eventually('dropped.txt no longer in the trash', async () => (await row(alice, 'dropped.txt').count()) === 0);

  step('delete a folder, restore it from the trash with everything in it');
  await alice.getByRole('link', { name: 'Files', exact: true }).click();
  await row(alice, 'Plans').getByRole('button', { name: 'Delete' }).click();
  await dialog(alice).getByRole('button', { name: 'Delete' }).click();
  await eventually('Plans gone from the agent folder', () => !fs.existsSync(path.join(folder, 'Plans', 'hello-renamed.txt')));
  await alice.getByRole('link', { name: 'Trash' }).click();
  await row(alice, 'Plans/hello-renamed.txt').waitFor();
  await shot(alice, 'trash-folder');
  await row(alice, 'Plans').getByRole('button', { name: 'Restore folder' }).click();
  await eventually('Plans back in the agent folder, with its file',
    () => readIf(path.join(folder, 'Plans', 'hello-renamed.txt')) === 'hello from the browser\n');
  await eventually('the trash is empty again', async () => (await alice.getByText('The trash is empty.').count()) === 1);

  step('the space used, and how long the workspace keeps versions and deleted files');
  await alice.getByRole('link', { name: 'Storage' }).click();
  await alice.getByRole('heading', { name: 'Space used' }).waitFor();
  await alice.getByText('30 days (the server’s default)').first().waitFor();
  await alice.getByLabel('Keep older versions (days)').fill('7');
  await alice.getByLabel('Keep deleted files (days)').fill('0');
  await alice.getByRole('button', { name: 'Save retention' }).click();
  await alice.getByText('7 days', { exact: true }).waitFor();
  await alice.getByText('until the next clean-up only').waitFor();
  await shot(alice, 'storage');
  await alice.getByLabel('Keep deleted files (days)').fill('');
  await alice.getByRole('button', { name: 'Save retention' }).click();
  await alice.getByText('30 days (the server’s default)').waitFor();

  step('who is online and what happened');
  await alice.getByRole('link', { name: 'Activity' }).click();
  await alice.getByRole('heading', { name: 'Online now' }).waitFor();
  await eventually('the agent is online', async () => {
    await alice.reload();
    await alice.getByRole('heading', { name: 'Recent activity' }).waitFor();
    return (await alice.getByRole('listitem').filter({ hasText: /alice on / }).count()) > 0;
  });
  await alice.getByRole('listitem').filter({ hasText: 'dropped.txt' }).first().waitFor();
  await shot(alice, 'activity');

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
  await bob.getByRole('link', { name: 'Storage' }).click();
  await bob.getByText('The owner of the workspace decides how long it keeps them.').waitFor();
  await bob.getByText('7 days', { exact: true }).waitFor();
  if (await bob.getByRole('button', { name: 'Save retention' }).count()) fail('a viewer is offered the retention form');
  await bob.getByRole('link', { name: 'Files', exact: true }).click();
  await row(bob, 'notes.txt').waitFor();

  step("alice makes bob an editor: bob's open page offers Upload by itself");
  await bob.evaluate(() => { window.storyMark = 'not reloaded'; });
  await row(alice, 'bob').getByRole('combobox').selectOption('editor');
  await row(alice, 'bob').getByRole('button', { name: 'Change role' }).click();
  await eventually("bob's role is editor", async () => (await row(alice, 'bob').getByRole('combobox').inputValue()) === 'editor');
  await bob.getByRole('button', { name: 'Upload' }).waitFor();
  if (await bob.evaluate(() => window.storyMark) !== 'not reloaded') fail("bob's page was reloaded");
  await shot(bob, 'editor-view');

  step("alice removes bob: bob's open page leaves the workspace");
  await row(alice, 'bob').getByRole('button', { name: 'Remove' }).click();
  await dialog(alice).getByRole('button', { name: 'Remove' }).click();
  await eventually('bob no longer listed', async () => (await row(alice, 'bob').count()) === 0);
  await bob.getByRole('heading', { name: 'Workspaces' }).waitFor();
  await bob.getByText('You no longer have access').waitFor();
  if (await bob.getByRole('link', { name: 'Team', exact: true }).count()) fail('bob still lists Team');
  await shot(bob, 'removed');

  step('a second workspace: shared, left by bob, renamed and deleted by alice');
  await alice.getByRole('link', { name: 'Workspaces' }).click();
  await alice.getByLabel('Workspace name').fill('Scratch');
  await alice.getByRole('button', { name: 'Create workspace' }).click();
  await alice.getByRole('heading', { name: 'Scratch', exact: true }).waitFor();
  await alice.getByRole('link', { name: 'Members' }).click();
  await alice.getByLabel('Email').fill(BOB.email);
  await alice.getByRole('button', { name: 'Share' }).click();
  await row(alice, 'bob').waitFor();
  await bob.getByRole('link', { name: 'Workspaces' }).click();
  await row(bob, 'Scratch').getByRole('button', { name: 'Leave' }).click();
  await dialog(bob).getByRole('button', { name: 'Leave' }).click();
  await eventually('bob left Scratch', async () => (await row(bob, 'Scratch').count()) === 0);
  await alice.getByRole('link', { name: 'Workspaces' }).click();
  await row(alice, 'Scratch').getByRole('button', { name: 'Rename' }).click();
  await dialog(alice).getByLabel('New name').fill('Scratch 2');
  await dialog(alice).getByRole('button', { name: 'Rename' }).click();
  await row(alice, 'Scratch 2').waitFor();
  await row(alice, 'Scratch 2').getByRole('button', { name: 'Delete' }).click();
  await shot(alice, 'delete-workspace');
  await dialog(alice).getByRole('button', { name: 'Delete' }).click();
  await eventually('Scratch 2 deleted', async () => (await row(alice, 'Scratch 2').count()) === 0);
  await row(alice, 'Team').waitFor();

  step('alice changes her password and logs in with the new one');
  await alice.getByRole('link', { name: 'Account' }).click();
  await alice.getByLabel('Current password').fill(ALICE.password);
  await alice.getByLabel('New password', { exact: true }).fill('alice-new-secret-2');
  await alice.getByLabel('Repeat the new password').fill('alice-new-secret-2');
  await alice.getByRole('button', { name: 'Change password' }).click();
  await alice.getByText('Your password was changed').waitFor();
  // Every other device was signed out: only this browser is left.
  await eventually('only this browser listed', async () => (await alice.getByRole('rowheader', { name: /this browser/ }).count()) === 1
    && (await alice.getByRole('region', { name: 'Devices' }).getByRole('row').count()) === 2);
  await shot(alice, 'account');
  await alice.getByRole('link', { name: 'Workspaces' }).click();
  await row(alice, 'Team').waitFor();
  ALICE.password = 'alice-new-secret-2';

  step('on a phone');
  await alice.setViewportSize({ width: 390, height: 844 });
  await openWorkspace(alice, 'Team');
  await row(alice, 'notes.txt').waitFor();
  await shot(alice, 'phone-files');
  await alice.setViewportSize({ width: 1200, height: 800 });

  step('alice logs out, and logs in with her new password');
  await alice.getByRole('button', { name: 'Log out' }).click();
  await alice.getByRole('heading', { name: 'Log in' }).waitFor();
  const after = await alice.evaluate(async () => (await fetch('/session')).status);
  if (after !== 401) fail(`after logging out, GET /session answers ${after}`);
  await alice.getByLabel('Email').fill(ALICE.email);
  await alice.getByLabel('Password').fill(ALICE.password);
  await alice.getByRole('button', { name: 'Log in' }).click();
  await row(alice, 'Team').waitFor();
}

try {
  await story();
} catch (err) {
  for (const [name, page] of pages) {
    await page.screenshot({ path: path.join(shots, `failed-${name}.png`), fullPage: true }).catch(() => {});
  }
  console.error(err);
  if (problems.length) console.error(`the pages reported:\n${problems.join('\n')}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
if (problems.length) fail(`the pages reported problems:\n${problems.join('\n')}`);
await browser.close();
step('done');
process.exit(0);
