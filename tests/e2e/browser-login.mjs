// The login in a real browser: headless Chromium driven by playwright-core, through the gateway in front
// of the demo app, against whichever provider the Rust test started.
//
// Usage: node browser-login.mjs '<json>' where the JSON object holds
//   name         names the screenshots: <name>-login.png, <name>-signed-in.png, <name>-failed-<step>.png
//   base         the gateway's public origin (http://localhost:PORT)
//   path         the protected page to start from (path and query)
//   username     password   the account to sign in with
//   email        the e-mail address the app must show
//   groups       the groups header the app must show
//   chromium     the browser executable (/usr/bin/chromium)
//   screenshots  the directory for the screenshots
//   hosts        optional: names the browser resolves to 127.0.0.1 (a proxy in front, on loopback)
//   caCertificateErrors  optional: true to accept that proxy's self-signed certificate
//
// Each step is printed as it starts; the first failure writes a screenshot named after the step,
// prints the error and exits 1. Exit 0 after the line "all steps passed".

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2] ?? '{}');
mkdirSync(cfg.screenshots, { recursive: true });
const screenshot = (page, suffix) => page.screenshot({
  path: join(cfg.screenshots, `${cfg.name}-${suffix}.png`), fullPage: true,
});

let step = 'launch';
let current;
const begin = (name, page) => {
  step = name;
  current = page;
  console.log(`[${cfg.name}] step: ${name}`);
};
const check = (ok, message) => {
  if (!ok) throw new Error(message);
};

// Which page of the flow is showing: the signed-in app, a provider login form, a consent page, a
// logout confirmation, or something else.
async function whereIs(page) {
  if (page.url().startsWith(`${cfg.base}/`) && await page.locator('#whoami').count()) return 'app';
  if (await page.locator('input[name=username], input[name=login]').count()) return 'login';
  if (await page.locator('input[name=prompt][value=consent]').count()) return 'consent';
  if (await page.locator('button[name=logout]').count()) return 'logout';
  return 'other';
}

// Submit something and wait until the next document has loaded (after any redirects).
async function submitting(page, action) {
  const loaded = page.waitForEvent('load');
  await action();
  await loaded;
}

// Fill in the provider's login page (and its consent page, if it shows one) until the app shows.
async function signIn(page) {
  for (let i = 0; i < 6; i += 1) {
    const at = await whereIs(page);
    if (at === 'app') return;
    if (at === 'login') {
      // The development provider names the field username, oidc-provider login.
      await page.locator('input[name=username], input[name=login]').fill(cfg.username);
      await page.locator('input[name=password]').fill(cfg.password);
      await submitting(page, () => page.locator('form button[type=submit]').first().click());
    } else if (at === 'consent') {
      await submitting(page, () => page.locator('form button[type=submit]').first().click());
    } else {
      throw new Error(`unexpected page while signing in: ${page.url()}\n${await page.content()}`);
    }
  }
  throw new Error(`not signed in after 6 pages: ${page.url()}`);
}

async function expectSignedIn(page, path) {
  check(page.url() === `${cfg.base}${path}`, `expected to be back at ${cfg.base}${path}, at ${page.url()}`);
  const whoami = await page.locator('#whoami').innerText();
  check(whoami.includes(cfg.email), `the app does not show ${cfg.email}: ${whoami}`);
  const identity = await page.locator('#identity').innerText();
  for (const expected of ['x-forwarded-user', `x-forwarded-email\t${cfg.email}`, `x-forwarded-groups\t${cfg.groups}`]) {
    check(identity.includes(expected), `the app did not receive ${expected}: ${identity}`);
  }
}

async function expectLoginPage(page) {
  check(!page.url().startsWith(`${cfg.base}/`), `expected the provider's login page, at ${page.url()}`);
  check(await whereIs(page) === 'login', `expected the provider's login page, got ${page.url()}`);
}

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  // The default temporary profile: a fresh user-data directory for every run.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    ...(cfg.hosts ?? []).map((host) => `--host-resolver-rules=MAP ${host} 127.0.0.1`)],
});
const loopbackNames = ['127.0.0.1', 'localhost', ...(cfg.hosts ?? [])];
let failed = false;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: cfg.caCertificateErrors === true });
  // Everything stays on loopback: oidc-provider's pages import a web font, which must not wait on
  // a network the test machine may not have.
  await context.route((url) => !loopbackNames.includes(url.hostname), (route) => route.abort());
  context.setDefaultTimeout(20_000);
  const page = await context.newPage();

  begin('open-protected-page', page);
  await page.goto(`${cfg.base}${cfg.path}`);
  await expectLoginPage(page);
  await screenshot(page, 'login');

  begin('sign-in', page);
  await signIn(page);
  await expectSignedIn(page, cfg.path);
  await screenshot(page, 'signed-in');

  begin('reload', page);
  await page.reload();
  await expectSignedIn(page, cfg.path);

  begin('sign-out', page);
  await submitting(page, () => page.locator('a[href="/oauth2/sign_out"]').click());
  if (await whereIs(page) === 'logout') {
    // oidc-provider asks before ending its session.
    await submitting(page, () => page.locator('button[name=logout]').click());
  }
  // Back at the gateway's root, which needs a login again.
  await expectLoginPage(page);

  begin('next-visit-needs-login', page);
  await page.goto(`${cfg.base}${cfg.path}`);
  await expectLoginPage(page);

  begin('two-tabs', page);
  const tabs = [await context.newPage(), await context.newPage()];
  await Promise.all(tabs.map((tab, i) => tab.goto(`${cfg.base}/tab/${i + 1}`)));
  for (const tab of tabs) await expectLoginPage(tab);
  await Promise.all(tabs.map((tab) => signIn(tab)));
  for (const [i, tab] of tabs.entries()) {
    current = tab;
    await expectSignedIn(tab, `/tab/${i + 1}`);
  }
  console.log(`[${cfg.name}] all steps passed`);
} catch (error) {
  failed = true;
  console.error(`[${cfg.name}] step ${step} failed: ${error?.stack ?? error}`);
  if (current) {
    await screenshot(current, `failed-${step}`).catch((e) => console.error(`no screenshot: ${e}`));
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
