'use strict';

// docs/SDKS.md's curl lines, run as written by bash and curl against a real
// `wxbroker dev`, with the environment the doc names.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { APPS, startDev, stopDev, docSnippet } = require('../lib/helpers');

let dev;
let tmp;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wxbroker-sdktest-'));
  fs.writeFileSync(path.join(tmp, 'photo.jpg'), Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(200 << 10, 1)]));
  dev = await startDev();
});

after(async () => {
  await stopDev(dev);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the curl lines of docs/SDKS.md', () => {
  const lines = docSnippet('curl').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
  assert.equal(lines.length, 3, 'docs/SDKS.md: want three curl lines (token, an API, an upload)');
  const env = { PATH: process.env.PATH, WXBROKER_URL: dev.base, WXBROKER_KEY: dev.key, WECHAT_APPID: APPS.a1.appid };
  const out = lines.map((line) => {
    const text = execFileSync('bash', ['-euo', 'pipefail', '-c', line], { cwd: tmp, env, encoding: 'utf8', timeout: 30_000 });
    return JSON.parse(text);
  });
  assert.ok(out[0].access_token && out[0].expires_in > 0, `token: ${JSON.stringify(out[0])}`);
  assert.ok(out[1].menu && Array.isArray(out[1].menu.button), `menu/get: ${JSON.stringify(out[1])}`);
  assert.ok(out[2].media_id && out[2].type === 'image', `media/upload: ${JSON.stringify(out[2])}`);
});
