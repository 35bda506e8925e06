package wechattest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// defaultAuthorizer is the account the authorization page proposes when
// the link names none (biz_appid).
const defaultAuthorizer = "wx00000000000000d1"

// authPageHTML is the Open Platform authorization page ("componentloginpage"),
// where a merchant's administrator authorizes a component: plain HTML with
// no script, like the qrconnect page.
const authPageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Authorize a third-party platform (simulator)</title>
<style>
body{font-family:system-ui,sans-serif;background:#ededed;margin:0;padding:2em}
main{max-width:26em;margin:auto;background:#fff;padding:1.5em;border-radius:8px}
h1{font-size:1.2em;margin-top:0}
label,input{display:block;width:100%;box-sizing:border-box;margin-bottom:1em}
input{padding:.5em;font-size:1em}
button{padding:.6em 1.2em;font-size:1em;border:0;border-radius:4px;background:#07c160;color:#fff}
code{word-break:break-all}
</style>
</head>
<body>
<main>
<h1>Authorize a third-party platform &mdash; simulator</h1>
<p>Platform <code>{{.ComponentAppID}}</code> asks to manage your account.</p>
<p>You will be sent back to <code>{{.RedirectURI}}</code>.</p>
<form method="post" action="componentloginpage/confirm">
<input type="hidden" name="component_appid" value="{{.ComponentAppID}}">
<input type="hidden" name="pre_auth_code" value="{{.PreAuthCode}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<label for="authorizer_appid">Your account's AppID (official account or mini program)</label>
<input type="text" id="authorizer_appid" name="authorizer_appid" value="{{.AuthorizerAppID}}">
<button type="submit" id="confirm">Authorize</button>
</form>
</main>
</body>
</html>
`

// authParams are the parameters of the authorization page and its
// confirm route.
type authParams struct {
	ComponentAppID  string
	PreAuthCode     string
	RedirectURI     string
	AuthorizerAppID string
	redirect        *url.URL
}

// authParse reads and checks the page's parameters: a registered
// component, a pre_auth_code it issued that has not expired or been used,
// an absolute http(s) redirect_uri. It answers an error page and returns
// false when they are wrong.
func (s *Sim) authParse(w http.ResponseWriter, r *http.Request) (authParams, bool) {
	if err := r.ParseForm(); err != nil {
		qrError(w, "invalid request")
		return authParams{}, false
	}
	p := authParams{
		ComponentAppID:  r.Form.Get("component_appid"),
		PreAuthCode:     r.Form.Get("pre_auth_code"),
		RedirectURI:     r.Form.Get("redirect_uri"),
		AuthorizerAppID: strings.TrimSpace(r.Form.Get("authorizer_appid")),
	}
	if p.AuthorizerAppID == "" {
		p.AuthorizerAppID = r.Form.Get("biz_appid")
	}
	if p.AuthorizerAppID == "" {
		p.AuthorizerAppID = defaultAuthorizer
	}
	u, err := url.Parse(p.RedirectURI)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		qrError(w, "invalid redirect_uri")
		return authParams{}, false
	}
	p.redirect = u
	s.mu.Lock()
	defer s.mu.Unlock()
	comp, ok := s.comps.byID[p.ComponentAppID]
	if !ok {
		qrError(w, "invalid component_appid")
		return authParams{}, false
	}
	exp, ok := comp.preAuth[p.PreAuthCode]
	if !ok || !s.now().Before(exp) {
		qrError(w, "invalid or expired pre_auth_code")
		return authParams{}, false
	}
	return p, true
}

// serveAuthPage serves GET /cgi-bin/componentloginpage?component_appid=
// &pre_auth_code=&redirect_uri=&auth_type=&biz_appid=, the page a
// merchant opens from the component's authorization link.
func (s *Sim) serveAuthPage(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authParse(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("Cache-Control", "no-store")
	_ = s.authPage.Execute(w, p)
}

// serveAuthConfirm serves /cgi-bin/componentloginpage/confirm (POST from
// the page, or GET with the same parameters): the pre_auth_code is used
// up, authorized (or updateauthorized) is pushed to the event URL before
// the answer, and the browser is redirected to redirect_uri with auth_code
// and expires_in, as WeChat does. A failed push does not stop the
// redirect (PushFailures counts it).
func (s *Sim) serveAuthConfirm(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authParse(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	comp := s.comps.byID[p.ComponentAppID]
	if _, ok := comp.preAuth[p.PreAuthCode]; !ok {
		// Another confirm used it between authParse and here.
		s.mu.Unlock()
		qrError(w, "invalid or expired pre_auth_code")
		return
	}
	delete(comp.preAuth, p.PreAuthCode)
	ev := s.authorize(comp, p.AuthorizerAppID, p.PreAuthCode)
	s.mu.Unlock()
	_ = s.push(r.Context(), p.ComponentAppID, ev)

	q := p.redirect.Query()
	q.Set("auth_code", ev.AuthorizationCode)
	q.Set("expires_in", strconv.FormatInt(int64(authCodeTTL/time.Second), 10))
	p.redirect.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, p.redirect.String(), http.StatusFound)
}
