'use strict';

// End to end: the npm WeChat SDK co-wechat-api, set up exactly as
// docs/SDKS.md says (the snippet is read from the doc and run), against a
// real `wxbroker dev` process and the simulated WeChat it embeds.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  APPS, startDev, stopDev, tokenValid, simCalls, killOutside, verdictAged, sdkFromDoc,
} = require('../lib/helpers');
const { hardcodedURLs } = require('../lib/hardcoded');
const fs = require('node:fs');
const path = require('node:path');

const APP = APPS.a1;
// Another one (the simulator ignores a second forced refresh of one app
// within 5 s, as WeChat does within 30 s).
const APP2 = APPS.b1;

let dev; // {proc, base, sim, key, stderr}

// sdk is co-wechat-api configured by the docs/SDKS.md snippet: appid = the
// managed app, secret = the wxbroker client key, URLs = the broker.
function sdk(app = APP) {
  return sdkFromDoc('co-wechat-api', dev, app);
}

before(async () => {
  dev = await startDev();
});

after(async () => {
  await stopDev(dev);
});

test('docs/SDKS.md counts the URLs co-wechat-api hard-codes', () => {
  const doc = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'SDKS.md'), 'utf8');
  const m = /co-wechat-api ([\d.]+) keeps (\d+) URLs/.exec(doc);
  assert.ok(m, 'docs/SDKS.md does not say how many URLs co-wechat-api keeps');
  assert.equal(require('co-wechat-api/package.json').version, m[1], 'docs/SDKS.md names another version');
  const got = hardcodedURLs('co-wechat-api');
  assert.equal(got.total, Number(m[2]), `docs/SDKS.md says ${m[2]}; the installed package has:\n${got.list.join('\n')}`);
  assert.deepEqual(Object.keys(got.byHost), ['api.weixin.qq.com']);
});

test('every URL field co-wechat-api sets in its constructor points at the broker, but mpPrefix', () => {
  const api = sdk();
  for (const [k, v] of Object.entries(api)) {
    if (typeof v === 'string' && /Prefix$|^prefix$/.test(k) && k !== 'mpPrefix') {
      assert.ok(v.startsWith(`${dev.base}/`), `${k} = ${v}: not the broker`);
    }
  }
});

test('the SDK fetches its token from the broker', async () => {
  const api = sdk();
  const tok = await api.getAccessToken();
  assert.match(tok.accessToken, /^\d+_/);
  assert.ok(tok.expireTime > Date.now(), 'expires_in was not a positive number of seconds');
  assert.equal(await tokenValid(dev, tok.accessToken, APP.appid), true, 'the broker handed out a token WeChat does not accept');
});

test('stable_token answers in WeChat\'s shape', async () => {
  const res = await fetch(`${dev.base}/cgi-bin/stable_token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credential', appid: APP.appid, secret: dev.key, force_refresh: false }),
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.ok(body.access_token && body.expires_in > 0, JSON.stringify(body));
  assert.equal(body.errcode, undefined);
});

test('a token killed outside: the SDK\'s repeated fetch (its 40001 retry) gets a new one', async () => {
  const api = sdk();
  const before = await api.getAccessToken();
  await verdictAged();
  await killOutside(dev, before.accessToken, APP);
  const checks = await simCalls(dev, 'get_api_domain_ip', APP.appid);
  // The SDK met 40001 with its token and asks the broker again at once.
  const dead = await api.getAccessToken();
  const fresh = dead.accessToken === before.accessToken ? await api.getAccessToken() : dead;
  assert.notEqual(fresh.accessToken, before.accessToken, 'the broker kept handing out the dead token');
  assert.equal(await tokenValid(dev, fresh.accessToken, APP.appid), true, 'the new token is not accepted by WeChat');
  assert.ok(await simCalls(dev, 'get_api_domain_ip', APP.appid) - checks <= 1, 'more than one token check for one report');
});

test('ordinary API calls go through the broker\'s gateway', async () => {
  const api = sdk();
  const menu = await api.getMenu();
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
});

test('an SDK holding a token killed outside still succeeds through the broker', async () => {
  const api = sdk(APP2);
  const held = await api.getAccessToken();
  await killOutside(dev, held.accessToken, APP2);
  const tokens = await simCalls(dev, 'stable_token', APP2.appid);
  // The SDK trusts its cached token (still within its expires_in) and calls
  // with it: the gateway puts the app's current token in, meets WeChat's
  // 40001 (the broker's token was the one killed), refreshes and re-sends.
  const menu = await api.getMenu();
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
  assert.equal((await api.getToken()).accessToken, held.accessToken, 'the SDK fetched a new token itself');
  // One normal-mode stable_token call by the broker picks up the token the
  // outside fetch minted; nothing is forced.
  assert.equal(await simCalls(dev, 'stable_token', APP2.appid) - tokens, 1);
});

test('plain HTTP through the gateway: client key and app instead of a token', async () => {
  const res = await fetch(`${dev.base}/cgi-bin/get_api_domain_ip`, {
    headers: { Authorization: `Bearer ${dev.key}`, 'X-Wxbroker-App': `prod/${APP.appid}` },
  });
  const body = await res.json();
  assert.equal(res.status, 200);
  assert.ok(Array.isArray(body.ip_list) && body.ip_list.length > 0, JSON.stringify(body));
});

test('code2Session goes through the gateway, which fills in the AppSecret for the client key (snsPrefix)', async () => {
  const res = await fetch(`${dev.sim}/sim/codes/login`, {
    method: 'POST',
    body: JSON.stringify({ appid: APP.appid, person: 'alice' }),
  });
  const { code } = await res.json();
  assert.ok(code, 'the simulator minted no login code');
  const s = await sdk().code2Session(code);
  assert.ok(s.openid && s.session_key, `jscode2session answered ${JSON.stringify(s)}`);
});
