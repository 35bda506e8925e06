'use strict';
const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, installWx, postJSON } = require('./harness.js');
const auth = require('../wechat-login.js');

let server;
let wxStub;

before(async () => {
  server = await startServer();
  auth.configure({ baseURL: server.loginURL });
});

after(() => server && server.stop());

beforeEach(() => {
  wxStub = installWx(server);
});

function count(path) {
  return wxStub.requests.filter((r) => r.url.endsWith(path)).length;
}

test('wechatLogin stores tokens and the user', async () => {
  assert.equal(auth.checkLoginStatus(), false);
  const { token, user } = await auth.wechatLogin({ askProfile: true });
  assert.ok(token.split('.').length === 3, 'access token is a JWT');
  assert.equal(auth.getLocalToken(), token);
  assert.equal(user.nickname, 'Node 用户');
  assert.equal(user.avatar, 'https://thirdwx.qlogo.cn/node.png');
  assert.ok(typeof user.id === 'string' && user.id.startsWith('u_'), 'opaque user id');
  assert.deepEqual(auth.getLocalUserInfo(), user);
  assert.equal(auth.checkLoginStatus(), true);
  assert.ok(wxStub.storage.get('refresh_token'), 'refresh token stored');
  const login = wxStub.requests.find((r) => r.url.endsWith('/api/v1/auth/wx-login'));
  assert.equal(login.method, 'POST');
  assert.equal(login.data.nickName, 'Node 用户');
});

test('request sends the Bearer token', async () => {
  await auth.wechatLogin();
  const res = await auth.request({ url: '/api/v1/user/profile' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.code, 200);
  assert.equal(res.data.data.id, auth.getLocalUserInfo().id);
  const sent = wxStub.requests.at(-1);
  assert.equal(sent.header.Authorization, 'Bearer ' + auth.getLocalToken());
});

test('request refreshes once on 401 and retries', async () => {
  await auth.wechatLogin();
  const oldRefresh = wxStub.storage.get('refresh_token');
  wxStub.setStorageSync('access_token', 'invalid.token.value');
  const res = await auth.request({ url: '/api/v1/user/profile' });
  assert.equal(res.statusCode, 200);
  assert.equal(count('/api/v1/auth/refresh'), 1);
  assert.equal(count('/api/v1/user/profile'), 2);
  assert.notEqual(auth.getLocalToken(), 'invalid.token.value');
  assert.notEqual(wxStub.storage.get('refresh_token'), oldRefresh, 'refresh token rotated');
});

test('concurrent 401s share one refresh', async () => {
  await auth.wechatLogin();
  wxStub.setStorageSync('access_token', 'invalid.token.value');
  const results = await Promise.all([1, 2, 3, 4].map(() => auth.request({ url: '/api/v1/user/profile' })));
  results.forEach((r) => assert.equal(r.statusCode, 200));
  assert.equal(count('/api/v1/auth/refresh'), 1);
});

test('a failed refresh clears the session and rejects with 401', async () => {
  await auth.wechatLogin();
  wxStub.setStorageSync('access_token', 'invalid.token.value');
  wxStub.setStorageSync('refresh_token', 'not-a-refresh-token');
  await assert.rejects(auth.request({ url: '/api/v1/user/profile' }), (err) => err.code === 401);
  assert.equal(auth.getLocalToken(), '');
  assert.equal(auth.checkLoginStatus(), false);
  assert.equal(count('/api/v1/user/profile'), 1, 'no retry after a failed refresh');
});

test('refreshToken rotates the pair', async () => {
  await auth.wechatLogin();
  const before = auth.getLocalToken();
  const rt = wxStub.storage.get('refresh_token');
  const token = await auth.refreshToken();
  assert.equal(token, auth.getLocalToken());
  assert.notEqual(token, before);
  assert.notEqual(wxStub.storage.get('refresh_token'), rt);
});

test('logout clears storage and the server rejects the old token', async () => {
  await auth.wechatLogin();
  const token = auth.getLocalToken();
  await auth.logout();
  assert.equal(auth.getLocalToken(), '');
  assert.equal(auth.getLocalUserInfo(), null);
  assert.equal(auth.checkLoginStatus(), false);
  const r = await fetch(server.loginURL + '/api/v1/user/profile', { headers: { Authorization: 'Bearer ' + token } });
  assert.equal(r.status, 401);
});

test('a reused code fails with the errcode and a hint', async () => {
  const { code } = await postJSON(server.simURL + '/sim/codes/login', { appid: server.appid, person: 'node-user' });
  wxStub.nextCode = code;
  await auth.wechatLogin();
  wxStub.nextCode = code;
  await assert.rejects(auth.wechatLogin(), (err) => {
    assert.equal(err.code, 401);
    assert.equal(err.errcode, 40163);
    assert.match(err.message, /错误码: 40163/);
    assert.ok(err.hint && err.hint.includes(' / '), 'bilingual hint');
    return true;
  });
});

test('the same person gets the same user id', async () => {
  wxStub.person = 'same-person';
  const a = await auth.wechatLogin();
  await auth.logout();
  const b = await auth.wechatLogin({ userInfo: { nickName: '新名字' } });
  assert.equal(a.user.id, b.user.id);
  assert.equal(b.user.nickname, '新名字');
});
