'use strict';
// Test harness (no tests here): builds and starts a real wxbroker login
// server with the WeChat simulator, and installs a stubbed global `wx` whose
// wx.login mints codes through the simulator's control endpoint and whose
// wx.request does real HTTP with node's fetch.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const repo = path.resolve(__dirname, '..', '..');

/**
 * startServer builds wxbroker with `go build -o` and starts `wxbroker dev` on
 * loopback ports it picks itself. Resolves {loginURL, simURL, appid, stop}.
 */
async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxbroker-node-'));
  const bin = path.join(dir, 'wxbroker');
  execFileSync('go', ['build', '-o', bin, './cmd/wxbroker'], { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
  const args = ['dev', '--listen', '127.0.0.1:0', '--public-listen', '127.0.0.1:0'];
  const child = spawn(bin, args, { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => {
    stderr += b;
  });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start in 60s:\n' + stderr)), 60000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${stderr}`));
    });
    const seen = {};
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const i = parseInfo(line, seen);
      if (i) {
        clearTimeout(timer);
        resolve(i);
      }
    });
  });
  return {
    ...info,
    stop() {
      child.removeAllListeners('exit');
      child.stdin.end();
      child.kill('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// parseInfo reads the banner `wxbroker dev` prints when ready
// ("login endpoints   http://…", "WeChat simulator  http://…", and the apps
// table, whose first prod miniprogram app is the one login.miniprogram uses).
function parseInfo(line, seen) {
  let m;
  if ((m = /^login endpoints\s+(http\S+)/.exec(line))) seen.loginURL = m[1];
  if ((m = /^WeChat simulator\s+(http\S+)/.exec(line))) seen.simURL = m[1];
  if (!seen.appid && (m = /^\s+prod\s+(wx[0-9a-f]{16})\s+miniprogram\b/.exec(line))) seen.appid = m[1];
  return seen.loginURL && seen.simURL && seen.appid ? { ...seen } : null;
}

async function postJSON(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const j = await r.json();
  if (!r.ok) throw new Error(`${url}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

/**
 * installWx sets global.wx for the server described by info. Returns the
 * stub: .person picks the simulated WeChat user, .requests logs every
 * wx.request, .storage is the Map behind the storage API, .nextCode forces
 * the code wx.login returns once.
 */
function installWx(info) {
  const stub = {
    person: 'node-user',
    profile: { nickName: 'Node 用户', avatarUrl: 'https://thirdwx.qlogo.cn/node.png' },
    requests: [],
    storage: new Map(),
    nextCode: '',
    login({ success, fail }) {
      if (stub.nextCode) {
        const code = stub.nextCode;
        stub.nextCode = '';
        setImmediate(() => success({ code, errMsg: 'login:ok' }));
        return;
      }
      postJSON(info.simURL + '/sim/codes/login', { appid: info.appid, person: stub.person }).then(
        (j) => success({ code: j.code, errMsg: 'login:ok' }),
        (e) => fail({ errMsg: 'login:fail ' + e.message }),
      );
    },
    getUserProfile({ success }) {
      setImmediate(() => success({ userInfo: { ...stub.profile }, errMsg: 'getUserProfile:ok' }));
    },
    request(opts) {
      stub.requests.push({ url: opts.url, method: opts.method || 'GET', header: { ...(opts.header || {}) }, data: opts.data });
      const method = (opts.method || 'GET').toUpperCase();
      const init = { method, headers: opts.header || {} };
      if (method !== 'GET' && opts.data !== undefined) {
        init.body = typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data);
      }
      fetch(opts.url, init)
        .then(async (r) => {
          const text = await r.text();
          let data = text;
          try {
            data = JSON.parse(text);
          } catch (e) {
            // not JSON: wx.request hands the text over
          }
          const header = {};
          r.headers.forEach((v, k) => {
            header[k] = v;
          });
          opts.success && opts.success({ statusCode: r.status, data, header, errMsg: 'request:ok' });
        })
        .catch((e) => opts.fail && opts.fail({ errMsg: 'request:fail ' + e.message }));
    },
    getStorageSync(key) {
      return stub.storage.has(key) ? structuredClone(stub.storage.get(key)) : '';
    },
    setStorageSync(key, value) {
      stub.storage.set(key, structuredClone(value));
    },
    removeStorageSync(key) {
      stub.storage.delete(key);
    },
  };
  global.wx = stub;
  return stub;
}

module.exports = { startServer, installWx, postJSON };
