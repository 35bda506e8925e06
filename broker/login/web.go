package login

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// Cookies of the website flow. Both are HttpOnly and SameSite=Lax (sent on
// the top-level redirect back from WeChat, never on cross-site POSTs);
// Secure follows login.web.cookie_secure.
const (
	stateCookie   = "wxbroker_state"
	sessionCookie = "wxbroker_session"
)

// oauthRecord is what the user's OAuth tokens are stored as (sealed).
type oauthRecord struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresAtMS  int64  `json:"expires_at_ms"`
	Scope        string `json:"scope"`
}

// webFlow is the website QR login (login.web): authorize, callback, the
// login page and the web session's logout.
type webFlow struct {
	responder
	cfg        *config.WebLogin
	app        *flowApp // nil: website login not configured; the routes answer a page saying so
	wx         *wechat.Client
	states     *states
	users      *users
	store      *store        // web sessions
	sessionTTL time.Duration // a web session lasts as long as a refresh family
	log        *zap.Logger
}

// stateCookiePath limits the state cookie to the callback, as the browser
// sees it (redirect_uri may carry a reverse proxy's path prefix).
func (w *webFlow) stateCookiePath() string {
	if u, err := url.Parse(w.cfg.RedirectURI); err == nil && u.Path != "" {
		return u.Path
	}
	return routeWebCallback
}

func (w *webFlow) cookieSecure() bool {
	return w.cfg.CookieSecure == nil || *w.cfg.CookieSecure
}

func (w *webFlow) setCookie(c echo.Context, name, value, path string, maxAge int) {
	c.SetCookie(&http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: w.cookieSecure(),
	})
}

// returnURL checks return_to against login.web.allowed_return_urls: same
// scheme and host (default ports normalised), and a path under an allowed
// path on a segment boundary. Empty means the first allowed URL.
func (w *webFlow) returnURL(raw string) (string, bool) {
	allowed := w.cfg.AllowedReturnURLs
	if raw == "" {
		return allowed[0], true
	}
	if len(raw) > 2048 || strings.ContainsAny(raw, "\\\r\n\t ") {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Opaque != "" || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", false
	}
	p := u.Path
	if p == "" {
		p = "/"
	}
	if c := path.Clean(p); c != p && c+"/" != p {
		return "", false // dot segments or doubled slashes
	}
	for _, a := range allowed {
		au, err := url.Parse(a)
		if err != nil || !strings.EqualFold(au.Scheme, u.Scheme) || hostPort(au) != hostPort(u) {
			continue
		}
		if pathUnder(p, au.Path) {
			return u.String(), true
		}
	}
	return "", false
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Hostname()) + ":" + port
}

// pathUnder reports whether p is base or below it, on a segment boundary.
func pathUnder(p, base string) bool {
	base = strings.TrimSuffix(base, "/")
	return base == "" || p == base || strings.HasPrefix(p, base+"/")
}

// webAuthorize serves GET /api/v1/auth/web/authorize?return_to=URL.
func (w *webFlow) webAuthorize(c echo.Context) error {
	if w.app == nil {
		return webOff(c)
	}
	returnTo, ok := w.returnURL(c.QueryParam("return_to"))
	if !ok {
		w.count(metrics.FlowWeb, resultInvalid)
		return htmlError(c, http.StatusBadRequest, "不允许的跳转地址", "return_to is not allowed",
			"登录后只能跳转到本站配置的地址（login.web.allowed_return_urls）。",
			"After login you can only return to a URL listed in login.web.allowed_return_urls.")
	}
	state, cookie, err := w.states.newState(returnTo)
	if err != nil {
		return err
	}
	w.setCookie(c, stateCookie, cookie, w.stateCookiePath(), int(stateTTL/time.Second))
	return c.Redirect(http.StatusFound,
		wechat.QRConnectURL(w.cfg.QRConnectURL, w.app.appid, w.cfg.RedirectURI, state))
}

// webCallback serves GET /api/v1/auth/web/callback?code&state.
func (w *webFlow) webCallback(c echo.Context) error {
	if w.app == nil {
		return webOff(c)
	}
	ctx := c.Request().Context()
	state, code := c.QueryParam("state"), c.QueryParam("code")
	cookie, _ := c.Cookie(stateCookie)
	w.setCookie(c, stateCookie, "", w.stateCookiePath(), -1) // single use, whatever happens next
	retry := "请回到登录页重新扫码。"
	retryEN := "Go back to the login page and scan again."
	if state == "" {
		w.count(metrics.FlowWeb, resultStateInvalid)
		return htmlError(c, http.StatusBadRequest, "缺少 state 参数", "Missing state", retry, retryEN)
	}
	if cookie == nil || cookie.Value == "" {
		w.count(metrics.FlowWeb, resultStateInvalid)
		return htmlError(c, http.StatusForbidden, "state 校验失败", "State does not match this browser",
			"这个登录回调不是由本浏览器发起的（可能是 CSRF 攻击，或 Cookie 被禁用）。"+retry,
			"This login callback was not started from this browser (possible CSRF, or cookies are blocked). "+retryEN)
	}
	rec, err := w.states.consumeState(ctx, state, cookie.Value)
	switch {
	case errors.Is(err, errStateMismatch):
		w.count(metrics.FlowWeb, resultStateInvalid)
		return htmlError(c, http.StatusForbidden, "state 校验失败", "State does not match this browser",
			"这个登录回调不是由本浏览器发起的（可能是 CSRF 攻击，或 Cookie 被禁用）。"+retry,
			"This login callback was not started from this browser (possible CSRF, or cookies are blocked). "+retryEN)
	case errors.Is(err, errStateUsed):
		w.count(metrics.FlowWeb, resultStateInvalid)
		return htmlError(c, http.StatusForbidden, "登录链接已使用或已过期", "This login link was already used or has expired", retry, retryEN)
	case errors.Is(err, errStateExpired):
		w.count(metrics.FlowWeb, resultStateInvalid)
		return htmlError(c, http.StatusForbidden, "登录链接已过期", "This login link has expired",
			"二维码登录需在 10 分钟内完成。"+retry, "A QR login must finish within 10 minutes. "+retryEN)
	case err != nil:
		w.log.Warn("consume oauth state failed", zap.Error(err))
		return htmlError(c, http.StatusServiceUnavailable, "服务暂不可用", "Service unavailable", retry, retryEN)
	}
	if code == "" {
		w.count(metrics.FlowWeb, resultDeclined)
		return renderPage(c, http.StatusOK, page{
			Title: "已取消登录 / Login cancelled", Heading: "你已取消微信登录", HeadingEN: "You declined the WeChat login",
			Detail: "没有获取任何信息。需要时可以重新登录。", DetailEN: "Nothing was shared. You can log in again whenever you like.",
			LoginURL: loginURL(rec.ReturnTo),
		})
	}
	if !validCode(code) {
		w.count(metrics.FlowWeb, resultInvalid)
		return htmlError(c, http.StatusBadRequest, "code 格式不正确", "Malformed code", retry, retryEN)
	}
	log := w.log.With(zap.String("namespace", w.app.ns), zap.String("appid", w.app.appid))
	tok, err := w.wx.OAuthAccessToken(ctx, w.app.appid, w.app.secret.Reveal(), code)
	if err != nil {
		return w.webWeChatFailed(c, log, err, "oauth2_access_token")
	}
	info, err := w.wx.UserInfo(ctx, tok.AccessToken, tok.OpenID)
	if err != nil {
		return w.webWeChatFailed(c, log, err, "userinfo")
	}
	unionid := tok.UnionID
	if unionid == "" {
		unionid = info.UnionID
	}
	oauth, err := json.Marshal(oauthRecord{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Scope: tok.Scope,
		ExpiresAtMS: w.now().Add(tok.ExpiresIn).UnixMilli(),
	})
	if err != nil {
		return err
	}
	u, created, err := w.users.upsertUser(ctx, identity{
		appid: w.app.appid, openid: tok.OpenID, unionid: unionid, nickname: info.Nickname, avatar: info.HeadImgURL,
		secrets: map[string]string{fieldOAuth + w.app.appid: string(oauth)},
	})
	if err != nil {
		w.count(metrics.FlowWeb, metrics.ResultError)
		return err
	}
	// A fresh session id on every login (no fixation); the old one ends.
	if old, err := c.Cookie(sessionCookie); err == nil && old.Value != "" {
		_ = w.store.endSession(ctx, old.Value)
	}
	sid := randomToken(32)
	if err := w.store.startSession(ctx, sid, u.id, w.sessionTTL); err != nil {
		w.count(metrics.FlowWeb, metrics.ResultError)
		return err
	}
	w.setCookie(c, sessionCookie, sid, "/", int(w.sessionTTL/time.Second))
	w.count(metrics.FlowWeb, metrics.ResultSuccess)
	if ce := log.Check(zap.DebugLevel, "website login"); ce != nil {
		ce.Write(zap.String("user_id", u.id), zap.Bool("new_user", created))
	}
	return c.Redirect(http.StatusFound, rec.ReturnTo)
}

func (w *webFlow) webWeChatFailed(c echo.Context, log *zap.Logger, err error, api string) error {
	var apiErr *wechat.APIError
	detail, detailEN := "微信暂时无法完成登录，请稍后重试。", "WeChat could not complete the login; try again shortly."
	if errors.As(err, &apiErr) {
		if apiErr.ConfigError() {
			log.Error("wechat refused the website app's credentials", zap.String("api", api), zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			w.count(metrics.FlowWeb, metrics.ResultError)
		} else if !userErrcode(apiErr.Code) {
			log.Warn("wechat refused the website login", zap.String("api", api), zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			w.count(metrics.FlowWeb, metrics.ResultError)
		} else {
			log.Debug("wechat refused the website login", zap.String("api", api), zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			w.count(metrics.FlowWeb, resultRejected)
		}
		if !userErrcode(apiErr.Code) {
			// The operator's business (logged above): generic text only.
			return htmlError(c, http.StatusServiceUnavailable, "微信登录失败", "WeChat login failed",
				"登录服务暂不可用，请稍后再试。", "Login is temporarily unavailable; try again later.")
		}
		detail = "错误码 " + strconv.Itoa(apiErr.Code) + "。"
		detailEN = "errcode " + strconv.Itoa(apiErr.Code) + ". "
		if h, ok := wechat.Explain(apiErr.Code); ok {
			detail += h.ZH
			detailEN += h.EN
		}
		return htmlError(c, http.StatusUnauthorized, "微信登录失败", "WeChat login failed", detail, detailEN)
	}
	log.Warn("wechat login call failed", zap.String("api", api), zap.Error(err))
	w.count(metrics.FlowWeb, metrics.ResultError)
	return htmlError(c, http.StatusBadGateway, "微信登录失败", "WeChat login failed", detail, detailEN)
}

// sessionUser returns the user id of the session cookie, "" when there is none.
func sessionUser(c echo.Context, st *store) (string, error) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return "", nil
	}
	uid, _, err := st.sessionUser(c.Request().Context(), ck.Value)
	return uid, err
}

// webLogout serves POST /api/v1/auth/web/logout: ends the session. A form
// post (the login page's button) is redirected back to /login.
func (w *webFlow) webLogout(c echo.Context) error {
	if ck, err := c.Cookie(sessionCookie); err == nil && ck.Value != "" {
		if err := w.store.endSession(c.Request().Context(), ck.Value); err != nil {
			w.count(metrics.FlowLogout, metrics.ResultError)
			return err
		}
	}
	w.setCookie(c, sessionCookie, "", "/", -1)
	w.count(metrics.FlowLogout, metrics.ResultSuccess)
	if strings.HasPrefix(c.Request().Header.Get(echo.HeaderContentType), echo.MIMEApplicationForm) {
		return c.Redirect(http.StatusSeeOther, routeLoginPage)
	}
	return w.ok(c, "退出成功", map[string]string{"message": "退出成功"})
}

func webOff(c echo.Context) error {
	return htmlError(c, http.StatusNotFound, "网站扫码登录未启用", "Website login is not enabled",
		"本站未启用微信扫码登录。", "This site does not offer WeChat QR login.")
}

// loginURL is the login page that leads back to returnTo.
func loginURL(returnTo string) string {
	if returnTo == "" {
		return routeLoginPage
	}
	return routeLoginPage + "?return_to=" + url.QueryEscape(returnTo)
}
