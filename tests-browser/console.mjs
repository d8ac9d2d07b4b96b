// Browser tests of muster's web console.
//
// Started by crates/muster/tests/e2e/console.rs against a real `muster serve` (MUSTER_BASE,
// MUSTER_ADMIN_PASSWORD), it drives Debian's /usr/bin/chromium through playwright-core (no
// browser download) and injects axe-core into every page it opens. Data the scenarios need
// but do not test (people, a provider, accounts) is made through the REST API; everything the
// scenarios test is done in the browser, as a person would.
//
// Every page gets: an axe-core run (no serious or critical violation), a screenshot in
// SCREENSHOT_DIR, and watchers that fail the run on a console error, an uncaught exception or
// a request to any other host. Prints "N passed, M failed" and exits non-zero on any failure.

import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const BASE = process.env.MUSTER_BASE;
const ADMIN_PASSWORD = process.env.MUSTER_ADMIN_PASSWORD;
const SHOTS = process.env.SCREENSHOT_DIR || 'target/console-screenshots';
const ONLY = process.env.CONSOLE_TESTS ? process.env.CONSOLE_TESTS.split(',') : null;
const ORIGIN = new URL(BASE).origin;
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(SHOTS, { recursive: true });

// ---- the REST API, for setup --------------------------------------------------------------

async function api(method, path, token, body) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: r.status, body: json };
}

async function ok(method, path, token, body, want = [200, 201, 204]) {
  const r = await api(method, path, token, body);
  if (!want.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function login(username, password) {
  return (await ok('POST', '/api/session', null, { username, password })).token;
}

/** RFC 6238 code of base32 `key` for the current 30-second step (plus `offset` steps). */
function totp(key, offset = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of key.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const bytes = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const step = Math.floor(Date.now() / 1000 / 30) + offset;
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', bytes).update(msg).digest();
  const o = h[h.length - 1] & 0xf;
  const n = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(n % 1000000).padStart(6, '0');
}

// ---- the browser --------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const problems = [];
const shotNames = new Set();
// axe-core itself sets inline styles while it measures (blocked by the console's CSP, which
// Chromium reports on the console); those reports are the test tool's, not the page's.
let inAxe = false;
// A scenario that provokes an error on purpose (the CSRF refusal) names what it expects.
let expected = [];

/** A new browser context (its own cookies) with the watchers on every page. */
async function person() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (inAxe && m.text().includes('Content Security Policy')) return;
    if (expected.some((e) => m.text().includes(e))) return;
    problems.push(`console error on ${page.url()} (from ${m.location().url || 'unknown'}): ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught exception on ${page.url()}: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('data:') && !u.startsWith('about:') && new URL(u).origin !== ORIGIN) {
      problems.push(`request to another host from ${page.url()}: ${u}`);
    }
  });
  page.on('dialog', (d) => d.accept());
  return { context, page };
}

/** axe-core on the page as it is now: no serious or critical violation; then a screenshot. */
async function check(page, name) {
  await page.waitForLoadState('load');
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    // Injected through the driver, not a <script> tag: the page's CSP stays as it is.
    await page.evaluate(AXE);
  }
  inAxe = true;
  const result = await page.evaluate(async () =>
    window.axe.run(document, { resultTypes: ['violations'] })).finally(() => { inAxe = false; });
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of bad) {
    problems.push(`axe ${v.impact} on ${name} (${page.url()}): ${v.id}: ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  }
  let file = name.replace(/[^a-z0-9-]+/gi, '-').toLowerCase();
  while (shotNames.has(file)) file += '-again';
  shotNames.add(file);
  await page.screenshot({ path: `${SHOTS}/${file}.png`, fullPage: true });
}

async function signIn(page, username, password) {
  await page.goto(BASE + '/login');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login"] button[type=submit]')]);
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).trim();
}

// ---- shared setup ---------------------------------------------------------------------------

const PASSWORD = 'Corr3ct-h0rse-battery';
const admin = await login('admin', ADMIN_PASSWORD);
const ids = {};

async function user(username, extra = {}) {
  const u = await ok('POST', '/api/users', admin, { username, password: PASSWORD, first_name: username[0].toUpperCase() + username.slice(1), last_name: 'Tester', ...extra });
  ids[username] = u;
  return u;
}

const provider = await ok('POST', '/api/marketplace-service-providers/', admin, {
  name: 'Cluster One',
  posix_settings: { uid_min: 10000, uid_max: 10009, gid_min: 10000, gid_max: 10009, home_prefix: '/home/', login_shell: '/bin/bash', shared_gid: null },
});
const offering = await ok('POST', '/api/marketplace-provider-offerings/', admin, { name: 'HPC One', provider_uuid: provider.uuid, posix_pool: 'provider' });
const manager = await user('manager1');
await ok('POST', `/api/marketplace-service-providers/${provider.uuid}/add_manager/`, admin, { user_uuid: manager.uuid });
const accounts = {};
for (const name of ['alice', 'bob', 'carol', 'dave']) {
  const u = await user(name);
  accounts[name] = await ok('POST', '/api/marketplace-offering-users/', admin, { offering_uuid: offering.uuid, user_uuid: u.uuid });
}
const products = await ok('GET', '/api/products', admin);
const productOf = (type, tag) => products.find((p) => p.product_type === type && (!tag || p.tag === tag));

// ---- the scenarios --------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('sign-in page: first-start hint, then a wrong password is refused without saying which part', async () => {
  const { context, page } = await person();
  await page.goto(BASE + '/');
  assert.match(page.url(), /\/login\?next=%2F$/);
  await page.click('details.hint summary');
  assert.match(await text(page, 'details.hint'), /admin/);
  await check(page, 'sign-in');
  await page.fill('#username', 'admin');
  await page.fill('#password', 'not-the-password');
  await page.click('form[action="/login"] button[type=submit]');
  await page.waitForSelector('#login-error');
  assert.equal(await text(page, '#login-error'), 'The username or password is not right.');
  await check(page, 'sign-in refused');
  await context.close();
});

test('sign in with a TOTP code', async () => {
  const u = await user('totpuser');
  const token = await login('totpuser', PASSWORD);
  const started = await ok('POST', '/api/users/me/totp', token, { password: PASSWORD });
  await ok('POST', '/api/users/me/totp/confirm', token, { totp_code: totp(started.totp_key) });
  const { context, page } = await person();
  await page.goto(BASE + '/login');
  await page.fill('#username', 'totpuser');
  await page.fill('#password', PASSWORD);
  await page.click('form[action="/login"] button[type=submit]');
  await page.waitForSelector('#totp_code');
  await check(page, 'sign-in TOTP step');
  // The confirmation spent the current step: the next one is accepted.
  await page.fill('#totp_code', totp(started.totp_key, 1));
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login/step"] button[type=submit]')]);
  assert.match(page.url(), /\/me$/, 'a person without other roles lands on Me');
  assert.match(await text(page, 'h1'), /totpuser/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'muster_session');
  assert.ok(session.httpOnly && session.sameSite === 'Strict', JSON.stringify(session));
  assert.ok(u.user_id);
  await context.close();
});

test('sign in with a password that must change', async () => {
  await user('changeme', { password_must_change: true });
  const { context, page } = await person();
  await page.goto(BASE + '/login');
  await page.fill('#username', 'changeme');
  await page.fill('#password', PASSWORD);
  await page.click('form[action="/login"] button[type=submit]');
  await page.waitForSelector('#new_password');
  await check(page, 'sign-in new password step');
  await page.fill('#new_password', 'Brand-n3w-passw0rd');
  await page.fill('#new_password_again', 'Brand-n3w-passw0rd');
  await Promise.all([page.waitForNavigation(), page.click('form[action="/login/step"] button[type=submit]')]);
  assert.match(page.url(), /\/me$/);
  await login('changeme', 'Brand-n3w-passw0rd');
  await context.close();
});

test('sign in with a password about to expire shows the warning', async () => {
  const u = await user('expiring');
  await ok('PUT', `/api/users/${u.user_id}/password`, admin, { new_password: PASSWORD, password_must_change: false, password_expiry_days: 3 });
  const { context, page } = await person();
  await page.goto(BASE + '/login');
  await page.fill('#username', 'expiring');
  await page.fill('#password', PASSWORD);
  await page.click('form[action="/login"] button[type=submit]');
  await page.waitForSelector('#expiry-warning');
  await check(page, 'sign-in expiry warning');
  await Promise.all([page.waitForNavigation(), page.click('text=Change my password')]);
  assert.match(page.url(), /\/me/);
  await context.close();
});

// The admin's browser, used by the scenarios that follow.
const adminBrowser = await person();
const ap = adminBrowser.page;

test('admin signs in and sees the dashboard with the lifecycle diagram', async () => {
  await signIn(ap, 'admin', ADMIN_PASSWORD);
  assert.equal(new URL(ap.url()).pathname, '/');
  await ap.waitForSelector('#live-badge.live-on');
  assert.equal(await ap.locator('.diagram svg a').count(), 10);
  assert.match(await ap.locator('.diagram svg').innerHTML(), />Requested<\/text><text[^>]*>4</);
  // The provider's shared Unix id pool: four accounts, four of its ten uids.
  const pool = ap.locator('#pools tr', { hasText: 'Cluster One' });
  assert.match(await pool.innerText(), /Provider \(shared\)\s+4 of 10 \(10000–10009\)\s+4 of 10 \(10000–10009\)\s+40%/);
  await check(ap, 'dashboard');
});

test('CSRF: a form post without the token is refused and changes nothing', async () => {
  expected = ['status of 403 (Forbidden)'];
  const r = await ap.evaluate(async () => {
    const body = new URLSearchParams({ username: 'csrfvictim', password: 'Whatever-1234' });
    const res = await fetch('/users/new', { method: 'POST', body });
    return { status: res.status, text: await res.text() };
  });
  assert.equal(r.status, 403);
  assert.match(r.text, /security token/);
  const wrong = await ap.evaluate(async () => {
    const body = new URLSearchParams({ _csrf: 'forged', username: 'csrfvictim' });
    return (await fetch('/users/new', { method: 'POST', body })).status;
  });
  assert.equal(wrong, 403);
  expected = [];
  const found = await ok('GET', '/api/users?username=csrfvictim', admin);
  assert.equal(found.total, 0, 'nothing was created');
});

test('Me: TOTP enrolment shows a QR code drawn on the server', async () => {
  const { context, page } = await person();
  await user('enroller');
  await signIn(page, 'enroller', PASSWORD);
  await check(page, 'me');
  await page.fill('#totp_password', PASSWORD);
  await page.click('form[action="/me/totp"] button[type=submit]');
  await page.waitForSelector('.qr svg');
  const key = await text(page, '#totp-key');
  await check(page, 'me TOTP enrolment');
  await page.fill('#confirm_code', totp(key));
  await page.click('form[action="/me/totp/confirm"] button[type=submit]');
  await page.waitForSelector('.flash');
  assert.match(await text(page, '.flash'), /Two-step sign-in is on/);
  await context.close();
});

let groupId;
test('create a user group through the form and watch the process complete live', async () => {
  const product = productOf('UserGroup');
  await ap.goto(BASE + '/start');
  await check(ap, 'start a workflow');
  await ap.goto(`${BASE}/start/create_user_group?product=${product.product_id}`);
  await check(ap, 'start create_user_group');
  await ap.fill('#f-group_name', 'Physics');
  await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  // Some forms have a summary page before they start.
  while (new URL(ap.url()).pathname.startsWith('/start/')) {
    await check(ap, 'start create_user_group next page');
    await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  }
  assert.match(ap.url(), /\/processes\/[0-9a-f-]+$/);
  await ap.evaluate(() => { window.__notReloaded = true; });
  await ap.waitForSelector('#process-status:text("completed")', { timeout: 30000 });
  assert.equal(await ap.evaluate(() => window.__notReloaded), true, 'updated live, without a reload');
  await check(ap, 'process completed');
  const subs = await ok('GET', '/api/subscriptions?filter=product_type,UserGroup', admin);
  groupId = subs.find((s) => s.description.includes('Physics')).subscription_id;
});

let userSubscription;
test('create a user through the form: the dropdown lists the group; a validation error keeps every value', async () => {
  const product = productOf('User', 'USER_INT') || productOf('User');
  await ap.goto(`${BASE}/start/create_user?product=${product.product_id}`);
  const options = await ap.locator('#f-user_group_ids-0 option').allTextContents();
  assert.ok(options.some((o) => o.includes('Physics')), options.join(' | '));
  await ap.fill('#f-username', 'newton');
  await ap.fill('#f-age', 'old');
  await ap.fill('#f-first_name', 'Isaac');
  await ap.fill('#f-last_name', 'Newton');
  await ap.fill('#f-email', 'isaac@example.org');
  await ap.selectOption('#f-user_group_ids-0', groupId);
  await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  assert.ok(await ap.locator('#f-age-error').count(), 'the error is next to its field');
  assert.equal(await ap.inputValue('#f-username'), 'newton');
  assert.equal(await ap.inputValue('#f-age'), 'old');
  assert.equal(await ap.inputValue('#f-first_name'), 'Isaac');
  assert.equal(await ap.inputValue('#f-last_name'), 'Newton');
  assert.equal(await ap.inputValue('#f-email'), 'isaac@example.org');
  assert.equal(await ap.inputValue('#f-user_group_ids-0'), groupId);
  await check(ap, 'start create_user validation error');
  await ap.fill('#f-age', '84');
  await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  while (new URL(ap.url()).pathname.startsWith('/start/')) {
    await check(ap, 'start create_user next page');
    await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  }
  await ap.waitForSelector('#process-status:text("completed")', { timeout: 30000 });
  const subs = await ok('GET', '/api/subscriptions?filter=product_type,User&query=newton', admin);
  userSubscription = subs[0].subscription_id;
});

test('retry a failed process', async () => {
  const model = await ok('GET', `/api/subscriptions/domain-model/${userSubscription}`, admin);
  const directoryUser = model.user.directory_user;
  await ok('PATCH', `/api/users/${directoryUser}`, admin, { username: 'renamed-newton' });
  await ap.goto(`${BASE}/subscriptions/${userSubscription}`);
  await check(ap, 'subscription');
  await Promise.all([ap.waitForNavigation(), ap.click('a[href^="/start/validate_user?"]')]);
  while (new URL(ap.url()).pathname.startsWith('/start/')) {
    await Promise.all([ap.waitForNavigation(), ap.click('#next')]);
  }
  await ap.waitForSelector('#process-status:text("failed")', { timeout: 30000 });
  assert.match(await text(ap, '#failed-reason'), /renamed-newton/);
  await check(ap, 'process failed');
  await ok('PATCH', `/api/users/${directoryUser}`, admin, { username: 'newton' });
  await Promise.all([ap.waitForNavigation(), ap.click('#retry')]);
  await ap.waitForSelector('#process-status:text("completed")', { timeout: 30000 });
  await check(ap, 'process retried');
});

test('users: search, detail, and a bulk action with a per-row outcome', async () => {
  await ap.goto(`${BASE}/users?name=Tester&sort=-sign_up_time`);
  assert.ok((await ap.locator('tbody tr').count()) >= 5);
  await check(ap, 'users');
  await ap.goto(`${BASE}/users/${ids.dave.user_id}`);
  await check(ap, 'user');
  await ap.goto(`${BASE}/users/new`);
  await check(ap, 'user new');
  // Bulk approve: already approved users are approved again (or refused); every row says so.
  await ap.goto(`${BASE}/users?name=Tester`);
  await ap.check(`input[name=ids][value="${ids.bob.user_id}"]`);
  await ap.check(`input[name=ids][value="${ids.carol.user_id}"]`);
  await ap.selectOption('#bulk-action', 'lock');
  await Promise.all([ap.waitForNavigation(), ap.click('#bulk button[type=submit]')]);
  assert.equal(await ap.locator('#bulk-outcomes tbody tr').count(), 2);
  await check(ap, 'users bulk outcome');
  await ok('POST', `/api/users/${ids.bob.user_id}/unlock`, admin, {});
  await ok('POST', `/api/users/${ids.carol.user_id}/unlock`, admin, {});
});

test('offering account from Requested to OK through a pending state with a comment, as a provider manager; the person sees the comment', async () => {
  const { context, page } = await person();
  await signIn(page, 'manager1', PASSWORD);
  assert.equal(new URL(page.url()).pathname, '/', 'a manager has a dashboard');
  await check(page, 'dashboard as provider manager');
  await page.goto(`${BASE}/accounts?user_username=alice`);
  const row = `#acc-${accounts.alice.uuid}`;
  await check(page, 'accounts as provider manager');
  const step = async (action, fill) => {
    await page.click(`${row} details summary`);
    const form = page.locator(`${row} form:has(button[data-action="${action}"])`);
    if (fill) await fill(form);
    await form.locator('button[type=submit]').click();
    await page.waitForSelector(`${row} [data-state]`);
  };
  // Only the targets the table allows from Requested are offered.
  await page.click(`${row} details summary`);
  const offered = await page.locator(`${row} button[data-action]`).evaluateAll((b) => b.map((x) => x.dataset.action));
  assert.deepEqual(offered.sort(), ['begin_creating', 'set_error_creating', 'set_ok'].sort());
  await check(page, 'account row actions');
  await page.click(`${row} details summary`);
  await step('begin_creating');
  await page.waitForSelector(`${row} [data-state="Creating"]`);
  await step('set_pending_account_linking', async (form) => {
    await form.locator('textarea[name=comment]').fill('Link your home account at the portal first.');
    await form.locator('input[name=comment_url]').fill('https://portal.example.org/link');
  });
  await page.waitForSelector(`${row} [data-state="Pending account linking"]`);

  const alice = await person();
  await signIn(alice.page, 'alice', PASSWORD);
  assert.match(await text(alice.page, '#accounts'), /Link your home account at the portal first\./);
  assert.equal(await alice.page.locator('#accounts a[href="https://portal.example.org/link"]').count(), 1);
  await check(alice.page, 'me with an offering account comment');
  await alice.context.close();

  // Pending → OK is set_validation_complete, as Waldur's UI sends it.
  await page.click(`${row} details summary`);
  assert.equal(await page.locator(`${row} button[data-action="set_validation_complete"]`).count(), 1);
  await page.click(`${row} details summary`);
  await step('set_validation_complete');
  await page.waitForSelector(`${row} [data-state="OK"]`);
  await page.goto(`${BASE}/accounts/${accounts.alice.uuid}`);
  const history = await page.locator('#history tbody tr').allTextContents();
  assert.equal(history.length, 4, history.join('\n'));
  await check(page, 'account history');
  await context.close();
});

test('bulk transition where one row fails shows the API sentence for it', async () => {
  // Carol's account moves meanwhile: begin_creating is no longer allowed for it.
  await ok('POST', `/api/marketplace-offering-users/${accounts.carol.uuid}/set_ok/`, admin, {});
  await ap.goto(`${BASE}/accounts?user_username=bob`);
  await ap.check(`input[name=ids][value="${accounts.bob.uuid}"]`);
  await ap.goto(`${BASE}/accounts?state=Requested&state=OK&size=100`);
  await ap.check(`input[name=ids][value="${accounts.bob.uuid}"]`);
  await ap.check(`input[name=ids][value="${accounts.carol.uuid}"]`);
  await ap.selectOption('#bulk-action', 'begin_creating');
  await Promise.all([ap.waitForNavigation(), ap.click('#bulk-form button[type=submit]')]);
  const rows = await ap.locator('#bulk-outcomes tbody tr').allTextContents();
  assert.equal(rows.length, 2);
  const carol = rows.find((r) => r.includes('carol'));
  const bob = rows.find((r) => r.includes('bob'));
  assert.match(bob, /done/);
  assert.match(carol, /not done/);
  assert.match(carol, /Offering user has invalid state|can only|state/i, carol);
  await check(ap, 'accounts bulk outcome');
});

test('CSV export matches the filtered list', async () => {
  await ap.goto(`${BASE}/accounts?state=Requested&state=Creating&size=100`);
  await check(ap, 'accounts filtered');
  const listed = (await ap.locator('#accounts tbody tr').evaluateAll((rows) => rows.map((r) => r.id.replace('acc-', '')))).sort();
  const total = Number((await text(ap, '#total strong')));
  assert.equal(listed.length, total);
  const href = await ap.getAttribute('a[download]', 'href');
  const csv = await (await ap.request.get(BASE + href)).text();
  const lines = csv.trim().split('\r\n');
  assert.equal(lines[0].split(',')[0], 'uuid');
  assert.deepEqual(lines.slice(1).map((l) => l.split(',')[0]).sort(), listed);
});

test('a row changed by someone else is highlighted live', async () => {
  await ap.goto(`${BASE}/accounts?user_username=dave`);
  await ap.waitForSelector('#live-badge.live-on');
  const row = `#acc-${accounts.dave.uuid}`;
  assert.equal(await ap.locator(`${row}.changed`).count(), 0);
  const agent = await login('manager1', PASSWORD);
  await ok('POST', `/api/marketplace-offering-users/${accounts.dave.uuid}/begin_creating/`, agent, {});
  await ap.waitForSelector(`${row}.changed [data-state="Creating"]`, { timeout: 15000 });
  await check(ap, 'accounts live highlight');
});

test('every other page renders and passes axe', async () => {
  for (const [path, name] of [
    ['/subscriptions', 'subscriptions'], ['/subscriptions?tab=all', 'subscriptions all'],
    ['/processes', 'processes'], ['/processes?tab=tasks', 'tasks'],
    ['/providers', 'providers'], [`/providers/${provider.uuid}`, 'provider'],
    ['/audit', 'audit'], ['/catalogue', 'catalogue'], ['/me', 'me admin'], ['/mail', 'mail'],
    // The pages for getting in without a password (a bad link gets a page that says so).
    ['/password-reset', 'password reset'], ['/password-reset?token=nope', 'reset link unknown'],
    ['/invitation?token=nope', 'invitation unknown'], ['/signup', 'sign up'],
    ['/signup/confirm?token=nope', 'sign-up confirmation unknown'],
  ]) {
    const r = await ap.goto(BASE + path);
    assert.equal(r.status(), 200, path);
    await check(ap, name);
  }
  // An audit record's request id opens every record of that request.
  await ap.goto(`${BASE}/audit?action=offering_user.transition`);
  const cid = await ap.locator('a.cid').first().textContent();
  await ap.click('a.cid >> nth=0');
  await ap.waitForURL(/cid=/);
  const cids = await ap.locator('a.cid').allTextContents();
  assert.ok(cids.length >= 1 && cids.every((c) => c === cid));
  await check(ap, 'audit by cid');
  // A provider API token's key is shown once.
  await ap.goto(`${BASE}/providers/${provider.uuid}`);
  await ap.fill('#token-name', 'agent@cluster1');
  await ap.click('form[action$="/token"] button[type=submit]');
  await ap.waitForSelector('#token-key');
  assert.match(await text(ap, '#token-key'), /^mpt_/);
  await check(ap, 'provider token created');
  await ap.goto(`${BASE}/providers/${provider.uuid}`);
  assert.equal(await ap.locator('#token-key').count(), 0, 'shown once');
});

test('sign out ends the session', async () => {
  await Promise.all([ap.waitForNavigation(), ap.click('form[action="/logout"] button')]);
  assert.match(ap.url(), /\/login\?signed_out=1/);
  await check(ap, 'signed out');
  await ap.goto(BASE + '/users');
  assert.match(ap.url(), /\/login\?next=/);
});

// ---- run -------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
for (const t of tests) {
  if (ONLY && !ONLY.some((o) => t.name.includes(o))) continue;
  const before = problems.length;
  try {
    await t.fn();
    if (problems.length > before) throw new Error(problems.slice(before).join('\n'));
    passed += 1;
    console.log(`ok - ${t.name}`);
  } catch (e) {
    failed += 1;
    expected = [];
    let n = 0;
    for (const c of browser.contexts()) {
      for (const p of c.pages()) {
        n += 1;
        await p.screenshot({ path: `${SHOTS}/FAILED-${t.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}-${n}.png`, fullPage: true }).catch(() => {});
      }
    }
    console.log(`FAILED - ${t.name}\n  ${String(e && e.stack || e).split('\n').slice(0, 6).join('\n  ')}`);
  }
}
await adminBrowser.context.close();
await browser.close();
writeFileSync(`${SHOTS}/index.txt`, [...shotNames].map((n) => `${n}.png`).join('\n') + '\n');
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
