package wechattest

import (
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// defaultPerson is the person the qrconnect page logs in unless changed.
const defaultPerson = "demo-user"

// qrPageHTML is the qrconnect page: plain HTML with inline CSS and no
// script, so it works offline and in headless browsers. The form's relative
// action resolves to /connect/qrconnect/confirm, also behind a path prefix.
const qrPageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WeChat login (simulator)</title>
<style>
body{font-family:system-ui,sans-serif;background:#ededed;margin:0;padding:2em}
main{max-width:26em;margin:auto;background:#fff;padding:1.5em;border-radius:8px}
h1{font-size:1.2em;margin-top:0}
label,input{display:block;width:100%;box-sizing:border-box;margin-bottom:1em}
input{padding:.5em;font-size:1em}
button{padding:.6em 1.2em;font-size:1em;margin-right:.5em;border:0;border-radius:4px}
#confirm{background:#07c160;color:#fff}
code{word-break:break-all}
</style>
</head>
<body>
<main>
<h1>WeChat login &mdash; simulator</h1>
<p>App <code>{{.AppID}}</code> asks you to log in.</p>
<p>You will be sent back to <code>{{.RedirectURI}}</code>.</p>
<form method="post" action="qrconnect/confirm">
<input type="hidden" name="appid" value="{{.AppID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}">
<label for="person">Person (any key; the same key is the same WeChat user)</label>
<input type="text" id="person" name="person" value="{{.Person}}">
<button type="submit" id="confirm" name="action" value="confirm">Confirm login</button>
<button type="submit" id="decline" name="action" value="decline">Decline</button>
</form>
</main>
</body>
</html>
`

// qrParams are the parameters of the qrconnect page and its confirm route.
type qrParams struct {
	AppID       string
	RedirectURI string
	State       string
	Person      string
	redirect    *url.URL
}

// qrParse reads and checks the qrconnect parameters; it answers a plain
// error page and returns false when they are wrong.
func (s *Sim) qrParse(w http.ResponseWriter, r *http.Request) (qrParams, bool) {
	if err := r.ParseForm(); err != nil {
		qrError(w, "invalid request")
		return qrParams{}, false
	}
	p := qrParams{
		AppID:       r.Form.Get("appid"),
		RedirectURI: r.Form.Get("redirect_uri"),
		State:       r.Form.Get("state"),
		Person:      strings.TrimSpace(r.Form.Get("person")),
	}
	if p.Person == "" {
		p.Person = defaultPerson
	}
	s.mu.Lock()
	_, known := s.apps[p.AppID]
	s.mu.Unlock()
	if !known {
		qrError(w, "invalid appid")
		return qrParams{}, false
	}
	u, err := url.Parse(p.RedirectURI)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		qrError(w, "invalid redirect_uri")
		return qrParams{}, false
	}
	p.redirect = u
	return p, true
}

func qrError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>WeChat login (simulator)</title></head>" +
		"<body><p>" + template.HTMLEscapeString(msg) + "</p></body></html>\n"))
}

// serveQRConnect serves GET /connect/qrconnect?appid=&redirect_uri=
// &response_type=code&scope=snsapi_login&state=.
func (s *Sim) serveQRConnect(w http.ResponseWriter, r *http.Request) {
	p, ok := s.qrParse(w, r)
	if !ok {
		return
	}
	if !strings.Contains(r.Form.Get("scope"), "snsapi_login") {
		qrError(w, "invalid scope: want snsapi_login")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("Cache-Control", "no-store")
	_ = s.qrPage.Execute(w, p)
}

// serveQRConfirm serves /connect/qrconnect/confirm (POST from the page, or
// GET with the same parameters): action=decline redirects with the state
// only, anything else mints an OAuth code for person and redirects with code
// and state.
func (s *Sim) serveQRConfirm(w http.ResponseWriter, r *http.Request) {
	p, ok := s.qrParse(w, r)
	if !ok {
		return
	}
	q := p.redirect.Query()
	if r.Form.Get("action") != "decline" {
		q.Set("code", s.MintOAuthCode(p.AppID, p.Person))
	}
	q.Set("state", p.State)
	p.redirect.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, p.redirect.String(), http.StatusFound)
}
