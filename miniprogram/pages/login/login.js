// Example login page. Copy wechat-login.js to utils/ and adjust the path.
const auth = require('../../wechat-login.js');

// Point the helper at your wxbroker public_listen (once, e.g. in app.js).
auth.configure({ baseURL: 'https://api.example.com' });

Page({
  data: {
    loggedIn: false,
    loading: false,
    user: null,
    phone: '',
    error: '',
  },

  onShow() {
    this.setData({ loggedIn: auth.checkLoginStatus(), user: auth.getLocalUserInfo() });
  },

  // Bound to the login button: wx.getUserProfile must run inside a tap.
  handleWechatLogin() {
    if (this.data.loading) return;
    this.setData({ loading: true, error: '' });
    auth
      .wechatLogin({ askProfile: true, desc: '用于完善用户资料' })
      .then(({ user }) => {
        this.setData({ loggedIn: true, user });
        wx.showToast({ title: '登录成功', icon: 'success' });
      })
      .catch((err) => {
        // err.errcode / err.hint come from WeChat (e.g. 40029: code expired).
        this.setData({ error: err.hint ? err.message + '\n' + err.hint : err.message });
        wx.showToast({ title: err.message, icon: 'none' });
      })
      .then(() => this.setData({ loading: false }));
  },

  // <button open-type="getPhoneNumber" bindgetphonenumber="handlePhone">
  handlePhone(e) {
    if (!e.detail || !e.detail.code) return; // the user declined
    auth
      .request({ url: '/api/v1/auth/wx-phone', method: 'POST', data: { code: e.detail.code } })
      .then((res) => {
        if (res.statusCode === 200) this.setData({ phone: res.data.data.phone_number });
        else wx.showToast({ title: res.data.message, icon: 'none' });
      })
      .catch((err) => this.onAuthError(err));
  },

  loadProfile() {
    auth
      .request({ url: '/api/v1/user/profile' })
      .then((res) => {
        if (res.statusCode === 200) this.setData({ user: res.data.data });
      })
      .catch((err) => this.onAuthError(err));
  },

  handleLogout() {
    auth.logout().then(() => this.setData({ loggedIn: false, user: null, phone: '' }));
  },

  onAuthError(err) {
    if (err.code === 401) {
      this.setData({ loggedIn: false, user: null });
      wx.showToast({ title: '登录已过期，请重新登录', icon: 'none' });
    } else {
      wx.showToast({ title: err.message, icon: 'none' });
    }
  },
});
