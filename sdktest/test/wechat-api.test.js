'use strict';

// End to end: the npm WeChat SDK wechat-api (callback style), set up exactly
// as docs/SDKS.md says (the snippet is read from the doc and run), against a
// real `wxbroker dev` process and the simulated WeChat it embeds.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const {
  APPS, startDev, stopDev, tokenValid, simCalls, killOutside, verdictAged, sdkFromDoc,
} = require('../lib/helpers');
const { hardcodedURLs } = require('../lib/hardcoded');

let dev; // {proc, base, sim, key, stderr}
let tmp;

// sdk is wechat-api configured by the docs/SDKS.md snippet, with its
// callback methods promisified.
function sdk(app) {
  const api = sdkFromDoc('wechat-api', dev, app);
  const call = (name, ...args) => promisify(api[name].bind(api))(...args);
  return { api, call };
}

// file writes size bytes (a JPEG header, then filler) and returns its path.
function file(name, size) {
  const p = path.join(tmp, name);
  const b = Buffer.alloc(size, 0x5a);
  Buffer.from([0xff, 0xd8, 0xff, 0xe0]).copy(b);
  fs.writeFileSync(p, b);
  return p;
}

// retryBodyBytes is gateway.retry_body_bytes in wxbroker dev (the default).
const retryBodyBytes = 1 << 20;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wxbroker-sdktest-'));
  dev = await startDev();
});

after(async () => {
  await stopDev(dev);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('wechat-api keeps no WeChat URL outside its endpoint fields', () => {
  const got = hardcodedURLs('wechat-api');
  assert.equal(got.total, 0, got.list.join('\n'));
  const { api } = sdk(APPS.a1);
  assert.equal(api.endpoint, dev.base);
  assert.equal(api.fileServerPrefix, `${dev.base}/cgi-bin/`);
});

test('setEndpoint() cannot point at a broker on plain HTTP: it forces https', () => {
  const { api } = sdk(APPS.a1);
  api.setEndpoint(new URL(dev.base).host);
  assert.equal(api.endpoint, `https://${new URL(dev.base).host}`);
});

test('the token comes from the broker', async () => {
  const { call } = sdk(APPS.a1);
  const tok = await call('getLatestToken');
  assert.match(tok.accessToken, /^\d+_/);
  assert.ok(tok.expireTime > Date.now(), 'expires_in was not a positive number of seconds');
  assert.equal(await tokenValid(dev, tok.accessToken, APPS.a1.appid), true, 'the broker handed out a token WeChat does not accept');
});

test('the JS-SDK ticket comes from the broker', async () => {
  const { call } = sdk(APPS.a2);
  const t = await call('getTicket', 'jsapi');
  assert.ok(t.ticket && t.expireTime > Date.now(), JSON.stringify(t));
  const res = await fetch(`${dev.base}/v1/namespaces/prod/apps/${APPS.a2.appid}/tickets/jsapi`, {
    headers: { Authorization: `Bearer ${dev.key}` },
  });
  assert.equal((await res.json()).ticket, t.ticket, 'the SDK got another ticket than the broker holds');
  const sig = await call('getJsConfig', { debug: false, jsApiList: ['chooseImage'], url: 'https://example.com/page' });
  assert.ok(sig.signature && sig.appId === APPS.a2.appid, JSON.stringify(sig));
});

test('an ordinary API call goes through the gateway', async () => {
  const { call } = sdk(APPS.a1);
  const menu = await call('getMenu');
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
});

test('an upload above gateway.retry_body_bytes, and its download', async () => {
  const { call } = sdk(APPS.a1);
  const p = file('photo.jpg', retryBodyBytes + (512 << 10));
  const up = await call('uploadMedia', p, 'image');
  assert.ok(up.media_id, JSON.stringify(up));
  const got = await call('getMedia', up.media_id);
  assert.ok(Buffer.isBuffer(got) && got.equals(fs.readFileSync(p)), 'media/get answered other bytes');
});

test('an SDK holding a token killed outside still succeeds through the broker', async () => {
  const { call } = sdk(APPS.b1);
  const held = await call('getLatestToken');
  await killOutside(dev, held.accessToken, APPS.b1);
  const fetches = await simCalls(dev, 'stable_token', APPS.b1.appid);
  // wechat-api calls with its cached token: the gateway puts the app's
  // current token in, meets WeChat's 40001, refreshes and re-sends.
  const menu = await call('getMenu');
  assert.ok(menu.menu && Array.isArray(menu.menu.button), `menu/get answered ${JSON.stringify(menu)}`);
  assert.equal((await call('getLatestToken')).accessToken, held.accessToken, 'the SDK fetched a new token itself');
  assert.equal(await simCalls(dev, 'stable_token', APPS.b1.appid) - fetches, 1, 'the broker forced a refresh');
});

test('an upload above retry_body_bytes after an outside kill: the gateway cannot re-send it, the SDK\'s retry with its cached token recovers', async () => {
  const { call } = sdk(APPS.a1);
  const held = await call('getLatestToken');
  await verdictAged(); // this fetch repeated an earlier one: a report, answered "still valid" for 1 s
  await killOutside(dev, held.accessToken, APPS.a1);
  const p = file('after-kill.jpg', retryBodyBytes + (256 << 10));
  const up = await call('uploadMedia', p, 'image');
  assert.ok(up.media_id, JSON.stringify(up));
  assert.equal((await call('getLatestToken')).accessToken, held.accessToken, 'the SDK fetched a new token itself');
  const metrics = await (await fetch(`${dev.base}/metrics`)).text();
  assert.match(metrics, new RegExp(`wxbroker_gateway_retries_total\\{[^}]*appid="${APPS.a1.appid}"[^}]*result="not_replayable"[^}]*\\} 1`),
    'the gateway did not count the upload it could not re-send');
});
