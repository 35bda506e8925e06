/**
 * wechat-login.js — mini-program login helper for wxbroker's login endpoints.
 *
 * CommonJS, no dependencies; runs in WeChat's mini-program runtime (uses the
 * global `wx`). Copy it to your project (e.g. utils/wechat-login.js) and:
 *
 *   const auth = require('../../utils/wechat-login.js');
 *   auth.configure({ baseURL: 'https://api.example.com' });
 *   auth.wechatLogin().then(({ user }) => ...);          // from a button tap
 *   auth.request({ url: '/api/v1/user/profile' }).then(res => res.data.data);
 *
 * Tokens live in the mini program's storage: access_token (a JWT, sent as
 * "Authorization: Bearer"), refresh_token (opaque, rotated on every refresh),
 * user_info and token_expires_at (ms). WeChat's session_key never reaches the
 * front end: the server keeps it.
 */
'use strict';

const KEYS = {
  accessToken: 'access_token',
  refreshToken: 'refresh_token',
  userInfo: 'user_info',
  expiresAt: 'token_expires_at',
};

const config = {
  baseURL: '',
  loginPath: '/api/v1/auth/wx-login',
  refreshPath: '/api/v1/auth/refresh',
  logoutPath: '/api/v1/auth/logout',
  timeout: 10000,
};

/**
 * configure sets the server's base URL (and, rarely, other paths).
 * @param {{baseURL?: string, loginPath?: string, refreshPath?: string, logoutPath?: string, timeout?: number}} opts
 */
function configure(opts) {
  Object.keys(opts || {}).forEach((k) => {
    if (Object.prototype.hasOwnProperty.call(config, k)) config[k] = opts[k];
  });
  config.baseURL = String(config.baseURL || '').replace(/\/+$/, '');
}

function absolute(url) {
  return /^https?:\/\//.test(url) ? url : config.baseURL + url;
}

function store(key, value) {
  try {
    wx.setStorageSync(key, value);
  } catch (e) {
    // Storage full or unavailable: the session lasts until the app closes.
  }
}

function load(key) {
  try {
    const v = wx.getStorageSync(key);
    return v === undefined || v === null ? '' : v;
  } catch (e) {
    return '';
  }
}

function clearLocal() {
  Object.keys(KEYS).forEach((k) => {
    try {
      wx.removeStorageSync(KEYS[k]);
    } catch (e) {
      // ignore
    }
  });
}

/** AuthError carries the server's envelope fields (code, errcode, hint). */
class AuthError extends Error {
  constructor(message, fields) {
    super(message);
    this.name = 'AuthError';
    Object.assign(this, fields || {});
  }
}

/** rawRequest wraps wx.request in a Promise; it never rejects on HTTP status. */
function rawRequest(opts) {
  return new Promise((resolve, reject) => {
    wx.request({
      url: absolute(opts.url),
      method: opts.method || 'GET',
      data: opts.data,
      header: Object.assign({ 'content-type': 'application/json' }, opts.header || {}),
      timeout: opts.timeout || config.timeout,
      success: resolve,
      fail: (err) => reject(new AuthError((err && err.errMsg) || 'request failed', { code: 0 })),
    });
  });
}

function envelopeError(res, fallback) {
  const body = res && res.data && typeof res.data === 'object' ? res.data : {};
  return new AuthError(body.message || fallback, {
    code: body.code || res.statusCode,
    statusCode: res.statusCode,
    errcode: body.errcode,
    hint: body.hint,
  });
}

function saveTokens(data) {
  store(KEYS.accessToken, data.access_token);
  if (data.refresh_token) store(KEYS.refreshToken, data.refresh_token);
  store(KEYS.expiresAt, Date.now() + (Number(data.expires_in) || 0) * 1000);
  if (data.user) store(KEYS.userInfo, data.user);
}

function wxLoginCode() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res && res.code ? resolve(res.code) : reject(new AuthError('wx.login 未返回 code', { code: 0 }))),
      fail: (err) => reject(new AuthError((err && err.errMsg) || 'wx.login 失败', { code: 0 })),
    });
  });
}

function askProfile(desc) {
  if (typeof wx.getUserProfile !== 'function') return Promise.resolve({});
  return new Promise((resolve) => {
    wx.getUserProfile({
      desc: desc || '用于完善用户资料',
      success: (res) => resolve((res && res.userInfo) || {}),
      // A refusal is not fatal: the user logs in without nickname/avatar.
      fail: () => resolve({}),
    });
  });
}

/**
 * wechatLogin logs the user in: wx.login() for a fresh single-use code, the
 * profile (options.userInfo, or wx.getUserProfile when options.askProfile is
 * true — it must then run inside a tap handler), then POST wx-login.
 * Resolves {token, user, data}; rejects with an AuthError (errcode and hint
 * from WeChat when it refused the code, e.g. 40029 expired, 40163 reused).
 * @param {{userInfo?: {nickName?: string, avatarUrl?: string}, askProfile?: boolean, desc?: string}} [options]
 */
function wechatLogin(options) {
  const opts = options || {};
  // Ask for the profile first: getUserProfile must run in the tap's call stack.
  const profile = opts.userInfo ? Promise.resolve(opts.userInfo) : opts.askProfile ? askProfile(opts.desc) : Promise.resolve({});
  return profile
    .then((info) => wxLoginCode().then((code) => ({ code, info })))
    .then(({ code, info }) =>
      rawRequest({
        url: config.loginPath,
        method: 'POST',
        data: { code, nickName: info.nickName || '', avatarUrl: info.avatarUrl || '' },
      }),
    )
    .then((res) => {
      const body = res.data || {};
      if (res.statusCode !== 200 || body.code !== 200 || !body.data) {
        throw envelopeError(res, '微信登录失败');
      }
      saveTokens(body.data);
      return { token: body.data.access_token, user: body.data.user, data: body.data };
    });
}

/** getLocalToken returns the stored access token, or ''. */
function getLocalToken() {
  return load(KEYS.accessToken);
}

/** getLocalUserInfo returns the stored user ({id, openid, nickname, avatar, created_at}) or null. */
function getLocalUserInfo() {
  return load(KEYS.userInfo) || null;
}

/**
 * checkLoginStatus reports whether the user is logged in locally: an access
 * token that has not expired, or a refresh token to renew it with.
 */
function checkLoginStatus() {
  if (!getLocalToken()) return false;
  const exp = Number(load(KEYS.expiresAt)) || 0;
  return exp > Date.now() || !!load(KEYS.refreshToken);
}

let refreshing = null;

/**
 * refreshToken exchanges the refresh token (or, lacking one, the access
 * token) for a new pair. Concurrent callers share one request. On 401 the
 * local session is cleared: the user must log in again.
 */
function refreshToken() {
  if (refreshing) return refreshing;
  const rt = load(KEYS.refreshToken);
  const at = getLocalToken();
  if (!rt && !at) return Promise.reject(new AuthError('未登录', { code: 401, statusCode: 401 }));
  refreshing = rawRequest({
    url: config.refreshPath,
    method: 'POST',
    data: rt ? { refresh_token: rt } : {},
    header: rt ? {} : { Authorization: 'Bearer ' + at },
  })
    .then((res) => {
      const body = res.data || {};
      if (res.statusCode !== 200 || body.code !== 200 || !body.data) {
        if (res.statusCode === 401) clearLocal();
        throw envelopeError(res, '登录已过期，请重新登录');
      }
      saveTokens(body.data);
      return body.data.access_token;
    })
    .then(
      (token) => {
        refreshing = null;
        return token;
      },
      (err) => {
        refreshing = null; // no Promise.finally on older base libraries
        throw err;
      },
    );
  return refreshing;
}

/**
 * logout ends the session on the server (access token denylisted, refresh
 * family revoked) and clears local storage. It resolves even when the
 * server cannot be reached: the local session is gone either way.
 */
function logout() {
  const at = getLocalToken();
  const rt = load(KEYS.refreshToken);
  clearLocal();
  if (!at && !rt) return Promise.resolve();
  return rawRequest({
    url: config.logoutPath,
    method: 'POST',
    data: at ? {} : { refresh_token: rt },
    header: at ? { Authorization: 'Bearer ' + at } : {},
  })
    .then(() => undefined)
    .catch(() => undefined);
}

/**
 * request calls your API with the access token. On a 401 it refreshes once
 * and retries once; if the refresh fails it rejects with an AuthError
 * (code 401) after clearing the local session — send the user to the login
 * page then. Resolves wx.request's result ({statusCode, data, header}) for
 * every other status.
 * @param {{url: string, method?: string, data?: any, header?: object, timeout?: number}} options
 */
function request(options) {
  const send = (token) => {
    const header = Object.assign({}, options.header || {});
    if (token) header.Authorization = 'Bearer ' + token;
    return rawRequest(Object.assign({}, options, { header }));
  };
  const sent = getLocalToken();
  return send(sent).then((res) => {
    const current = getLocalToken();
    if (res.statusCode !== 401 || !current) return res;
    // Another request refreshed while this one was in flight: just retry.
    if (current !== sent) return send(current);
    return refreshToken().then(send, (err) => {
      throw err.statusCode === 401 ? new AuthError('登录已过期，请重新登录', { code: 401, statusCode: 401 }) : err;
    });
  });
}

module.exports = {
  configure,
  wechatLogin,
  checkLoginStatus,
  getLocalToken,
  getLocalUserInfo,
  refreshToken,
  logout,
  request,
  AuthError,
};
