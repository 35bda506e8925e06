'use strict';

// Shared by the sdktest files: a real `wxbroker dev` process, the simulator's
// control endpoints, and the snippets of docs/SDKS.md.
//
// WXBROKER_BIN names a built binary; without it the tests build one with
// `go build` into a temporary directory.

const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

// Demo apps of `wxbroker dev` with their AppSecrets (the simulator's, for
// outside fetches). a1 and b1 are mini programs on stable tokens: a forced
// stable_token call by anyone else kills the current token at once. a2 is
// an official account with classic tokens and the jsapi ticket.
const APPS = {
  a1: { appid: 'wxd0000000000000a1', secret: 'dev-secret-prod-miniprogram', ns: 'prod' },
  a2: { appid: 'wxd0000000000000a2', secret: 'dev-secret-prod-official', ns: 'prod' },
  b1: { appid: 'wxd0000000000000b1', secret: 'dev-secret-staging-miniprogram', ns: 'staging' },
};

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

// startDev runs `wxbroker dev` on a port the system picks, reads the
// addresses and the demo key from the banner it prints, and waits until the
// broker hands out a1's token.
async function startDev() {
  const bin = buildBinary();
  const dev = await new Promise((resolve, reject) => {
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
  await waitFor('a token from the broker', async () => {
    const res = await fetch(`${dev.base}/cgi-bin/token?grant_type=client_credential&appid=${APPS.a1.appid}&secret=${dev.key}`);
    return (await res.json()).access_token !== undefined;
  });
  return dev;
}

async function stopDev(dev) {
  if (!dev) return;
  const exited = new Promise((r) => dev.proc.on('exit', r));
  dev.proc.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
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

async function tokenValid(dev, token, appid) {
  const u = `${dev.sim}/sim/token_valid?appid=${appid}&token=${encodeURIComponent(token)}`;
  const res = await fetch(u);
  return (await res.json()).valid === true;
}

async function simCalls(dev, api, appid) {
  const stats = await (await fetch(`${dev.sim}/sim/stats`)).json();
  return (stats.calls[api] || {})[appid] || 0;
}

// killOutside: another process fetches a token with the same AppID (a forced
// stable token): the token the broker serves, and every SDK cached, is dead.
async function killOutside(dev, token, app) {
  const res = await fetch(`${dev.sim}/cgi-bin/stable_token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ grant_type: 'client_credential', appid: app.appid, secret: app.secret, force_refresh: true }),
  });
  const body = await res.json();
  assert.ok(body.access_token, `outside forced stable_token failed: ${JSON.stringify(body)}`);
  assert.equal(await tokenValid(dev, token, app.appid), false, 'the outside fetch did not kill the token');
}

// The broker's verdict "WeChat still accepts this token" answers reports of
// it for one second (a burst of reports costs one check). A token fetch
// repeated by one caller within seconds is such a report: let that second
// pass before killing a token, or it stays defended until then.
async function verdictAged() {
  await new Promise((r) => setTimeout(r, 1100));
}

const sdksDoc = path.join(root, 'docs', 'SDKS.md');

// docSnippet returns the code block of docs/SDKS.md that follows the marker
// <!-- sdktest: name -->.
function docSnippet(name) {
  const doc = fs.readFileSync(sdksDoc, 'utf8');
  const at = doc.indexOf(`<!-- sdktest: ${name} -->`);
  assert.ok(at >= 0, `docs/SDKS.md has no <!-- sdktest: ${name} --> marker`);
  const m = /```[a-z]*\n([\s\S]*?)\n```/.exec(doc.slice(at));
  assert.ok(m, `docs/SDKS.md has no code block after <!-- sdktest: ${name} -->`);
  return m[1];
}

// sdkFromDoc runs the JavaScript snippet of docs/SDKS.md named name, as
// written, with the environment it documents, and returns its `api`.
function sdkFromDoc(name, dev, app) {
  const env = { WXBROKER_URL: dev.base, WXBROKER_KEY: dev.key, WECHAT_APPID: app.appid };
  // eslint-disable-next-line no-new-func
  return new Function('require', 'process', `${docSnippet(name)}\nreturn api;`)(require, { env });
}

module.exports = {
  APPS, root, startDev, stopDev, waitFor, tokenValid, simCalls, killOutside, verdictAged,
  docSnippet, sdkFromDoc,
};
