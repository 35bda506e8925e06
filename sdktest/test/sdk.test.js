'use strict';

// End to end: the npm WeChat SDK co-wechat-api, its API base URL pointed at a
// real `wxbroker dev` process (appid = a managed app, secret = the client
// key), against the simulated WeChat that `wxbroker dev` embeds.
//
// WXBROKER_BIN names a built binary; without it the test builds one with
// `go build` into a temporary directory.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WechatAPI = require('co-wechat-api');

const root = path.resolve(__dirname, '..', '..');
// A demo app of `wxbroker dev`: a mini program on stable tokens. A forced
// stable_token call by anyone else kills its current token at once.
const APPID = 'wxd0000000000000a1';
const APP_SECRET = 'dev-secret-prod-miniprogram';
// Another one (the simulator ignores a second forced refresh of one app
// within 5 s, as WeChat does within 30 s).
const APPID2 = 'wxd0000000000000b1';
const APP2_SECRET = 'dev-secret-staging-miniprogram';

let dev; // {proc, base, sim, key, output}

function goBinary() {
  for (const p of ['/usr/local/go/bin/go']) {
    if (fs.existsSync(p)) return p;
  }
  return 'go';
}

function buildBinary() {
  if (process.env.WXBROKER_BIN) return process.env.WXBROKER_BIN;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxbroker-sdktest-'));
  const bin = path.join(dir, 'wxbroker');
  execFileSync(goBinary(), ['build', '-o', bin, './cmd/wxbroker'], { cwd: root, stdio: 'inherit' });
  return bin;
}

// startDev runs `wxbroker dev` on a port the system picks and reads the
// addresses and the demo key from the banner it prints.
function startDev(bin) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ['dev', '--listen', '127.0.0.1:0', '--public-listen', '', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`wxbroker dev printed no banner within 60s\nstdout:\n${out}\nstderr:\n${err}`));
    }, 60_000);
    proc.stderr.on('data', (d) => { err += d; });
    proc.stdout.on('data', (d) => {
      out += d;
      const base = /internal API\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      const sim = /WeChat simulator\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      const key = /demo client key\s+(\S+)/.exec(out);
      if (base && sim && key) {
        clearTimeout(timer);
        resolve({ proc, base: base[1], sim: sim[1], key: key[1], stderr: () => err });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`wxbroker dev exited (${code}) before printing its banner\nstderr:\n${err}`));
    });
  });
}

async function waitFor(what, cond, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await cond()) return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function tokenValid(token, appid = APPID) {
  const u = `${dev.sim}/sim/token_valid?appid=${appid}&token=${encodeURIComponent(token)}`;
  const res = await fetch(u);
  return (await res.json()).valid === true;
}

async function simCalls(api, appid = APPID) {
  const stats = await (await fetch(`${dev.sim}/sim/stats`)).json();
  return (stats.calls[api] || {})[appid] || 0;
}

// Another process fetches a token with the same AppID (a forced stable
// token): the token the broker serves, and every SDK cached, is dead.
async function killOutside(token, appid = APPID, secret = APP_SECRET) {
  const res = await fetch(`${dev.sim}/cgi-bin/stable_token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credential', appid, secret, force_refresh: true }),
  });
  const body = await res.json();
  assert.ok(body.access_token, `outside forced stable_token failed: ${JSON.stringify(body)}`);
  assert.equal(await tokenValid(token, appid), false, 'the outside fetch did not kill the token');
}

function sdk(appid = APPID) {
  // appid = the managed app, secret = the wxbroker client key, base URL =
  // the broker. Every call the SDK makes goes to the broker.
  const api = new WechatAPI(appid, dev.key);
  api.prefix = `${dev.base}/cgi-bin/`;
  return api;
}

before(async () => {
  const bin = buildBinary();
  dev = await startDev(bin);
  await waitFor('a token from the broker', async () => {
    const res = await fetch(`${dev.base}/cgi-bin/token?grant_type=client_credential&appid=${APPID}&secret=${dev.key}`);
    return (await res.json()).access_token !== undefined;
  });
});

after(async () => {
  if (!dev) return;
  const exited = new Promise((r) => dev.proc.on('exit', r));
  dev.proc.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
});

test('the SDK fetches its token from the broker', async () => {
  const api = sdk();
  const tok = await api.getAccessToken();
  assert.match(tok.accessToken, /^\d+_/);
  assert.ok(tok.expireTime > Date.now(), 'expires_in was not a positive number of seconds');
  assert.equal(await tokenValid(tok.accessToken), true, 'the broker handed out a token WeChat does not accept');
});

test('stable_token answers in WeChat\'s shape', async () => {
  const res = await fetch(`${dev.base}/cgi-bin/stable_token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credential', appid: APPID, secret: dev.key, force_refresh: false }),
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.ok(body.access_token && body.expires_in > 0, JSON.stringify(body));
  assert.equal(body.errcode, undefined);
});

// The broker's verdict "WeChat still accepts this token" answers reports of
// it for one second (a burst of reports costs one check). The fetches above
// were such reports (the same caller fetching again within seconds), so
// let that second pass: a token killed within it stays defended until then.
async function verdictAged() {
  await new Promise((r) => setTimeout(r, 1100));
}

test('a token killed outside: the SDK\'s repeated fetch (its 40001 retry) gets a new one', async () => {
  const api = sdk();
  const before = await api.getAccessToken();
  await verdictAged();
  await killOutside(before.accessToken);
  const checks = await simCalls('get_api_domain_ip');
  // The SDK met 40001 with its token and asks the broker again at once.
  const dead = await api.getAccessToken();
  const fresh = dead.accessToken === before.accessToken ? await api.getAccessToken() : dead;
  assert.notEqual(fresh.accessToken, before.accessToken, 'the broker kept handing out the dead token');
  assert.equal(await tokenValid(fresh.accessToken), true, 'the new token is not accepted by WeChat');
  assert.ok(await simCalls('get_api_domain_ip') - checks <= 1, 'more than one token check for one report');
});

test('ordinary API calls go through the broker\'s gateway', async () => {
  const api = sdk();
  const menu = await api.getMenu();
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
});

test('an SDK holding a token killed outside still succeeds through the broker', async () => {
  const api = sdk(APPID2);
  const held = await api.getAccessToken();
  await killOutside(held.accessToken, APPID2, APP2_SECRET);
  const tokens = await simCalls('stable_token', APPID2);
  // The SDK trusts its cached token (still within its expires_in) and calls
  // with it: the gateway puts the app's current token in, meets WeChat's
  // 40001 (the broker's token was the one killed), refreshes and re-sends.
  const menu = await api.getMenu();
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
  assert.equal((await api.getToken()).accessToken, held.accessToken, 'the SDK fetched a new token itself');
  // One normal-mode stable_token call by the broker picks up the token the
  // outside fetch minted; nothing is forced.
  assert.equal(await simCalls('stable_token', APPID2) - tokens, 1);
});

test('plain HTTP through the gateway: client key and app instead of a token', async () => {
  const res = await fetch(`${dev.base}/cgi-bin/get_api_domain_ip`, {
    headers: { Authorization: `Bearer ${dev.key}`, 'X-Wxbroker-App': `prod/${APPID}` },
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.ok(Array.isArray(body.ip_list) && body.ip_list.length > 0, JSON.stringify(body));
});
