package login

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"
)

// page is the data of the one HTML template: the login page, its logged-in
// state, and the messages of the website flow (declined, errors).
type page struct {
	Title     string
	Heading   string
	HeadingEN string
	Detail    string
	DetailEN  string
	// AuthorizeURL shows the "log in with WeChat" button.
	AuthorizeURL string
	// LoginURL shows a link back to the login page.
	LoginURL string
	// User shows the logged-in profile and a logout button.
	User *userView
}

// pageCSP allows no script at all: the page is plain HTML and CSS.
const pageCSP = "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
  body { margin: 0; font-family: -apple-system, "PingFang SC", "Microsoft YaHei", "Segoe UI", sans-serif;
         background: #f3f4f6; color: #1f2937; display: flex; min-height: 100vh; align-items: center; justify-content: center; }
  main { background: #fff; border-radius: 12px; box-shadow: 0 4px 24px rgba(0,0,0,.08); padding: 40px 48px;
         width: 100%; max-width: 380px; text-align: center; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  .en { color: #6b7280; font-size: 14px; margin: 0 0 20px; }
  p { line-height: 1.6; }
  .btn { display: inline-block; background: #07c160; color: #fff; text-decoration: none; border: 0; cursor: pointer;
         border-radius: 8px; padding: 12px 28px; font-size: 16px; }
  .btn:hover { background: #06ad56; }
  .btn.secondary { background: #e5e7eb; color: #1f2937; }
  img.avatar { width: 72px; height: 72px; border-radius: 50%; object-fit: cover; background: #e5e7eb; }
  dl { text-align: left; display: grid; grid-template-columns: auto 1fr; gap: 6px 12px; margin: 20px 0; }
  dt { color: #6b7280; } dd { margin: 0; word-break: break-all; }
</style>
</head>
<body>
<main>
{{- if .User}}
  <section id="profile">
    {{- if .User.Avatar}}<img class="avatar" src="{{.User.Avatar}}" alt="">{{end}}
    <h1 id="nickname">{{if .User.Nickname}}{{.User.Nickname}}{{else}}微信用户{{end}}</h1>
    <p class="en">已登录 / Logged in</p>
    <dl>
      <dt>用户 ID / User ID</dt><dd id="user-id">{{.User.ID}}</dd>
      <dt>注册时间 / Since</dt><dd>{{.User.CreatedAt}}</dd>
      {{- if .User.LastLoginAt}}<dt>最近登录 / Last login</dt><dd>{{.User.LastLoginAt}}</dd>{{end}}
    </dl>
    <form method="post" action="/api/v1/auth/web/logout">
      <button class="btn secondary" id="logout" type="submit">退出登录 / Log out</button>
    </form>
  </section>
{{- else}}
  <h1>{{.Heading}}</h1>
  <p class="en">{{.HeadingEN}}</p>
  {{- if .Detail}}<p>{{.Detail}}</p>{{end}}
  {{- if .DetailEN}}<p class="en">{{.DetailEN}}</p>{{end}}
  {{- if .AuthorizeURL}}
  <p><a class="btn" id="wechat-login" href="{{.AuthorizeURL}}">使用微信登录 / Log in with WeChat</a></p>
  {{- end}}
  {{- if .LoginURL}}
  <p><a class="btn secondary" id="back" href="{{.LoginURL}}">返回登录页 / Back to login</a></p>
  {{- end}}
{{- end}}
</main>
</body>
</html>
`))

func renderPage(c echo.Context, status int, p page) error {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, p); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	return c.HTMLBlob(status, buf.Bytes())
}

// htmlError answers a browser route's failure with a readable page.
func htmlError(c echo.Context, status int, title, titleEN, detail, detailEN string) error {
	return renderPage(c, status, page{
		Title: title + " / " + titleEN, Heading: title, HeadingEN: titleEN,
		Detail: detail, DetailEN: detailEN, LoginURL: routeLoginPage,
	})
}

// loginPage serves GET /login: the logged-in profile when the session cookie
// is valid, else the "log in with WeChat" button (keeping ?return_to).
func (w *webFlow) loginPage(c echo.Context) error {
	uid, err := sessionUser(c, w.store)
	if err != nil {
		return err
	}
	if uid != "" {
		u, err := w.users.loadUser(c.Request().Context(), uid)
		if err == nil {
			appid := ""
			if w.app != nil {
				appid = w.app.appid
			}
			return renderPage(c, http.StatusOK, page{Title: "已登录 / Logged in", User: w.users.view(u, appid)})
		}
		if !errors.Is(err, errNoUser) {
			return err
		}
	}
	if w.app == nil {
		return webOff(c)
	}
	authorize := routeWebAuthorize
	if rt := c.QueryParam("return_to"); rt != "" {
		authorize += "?return_to=" + url.QueryEscape(rt)
	}
	return renderPage(c, http.StatusOK, page{
		Title: "登录 / Log in", Heading: "登录", HeadingEN: "Log in",
		Detail: "使用微信扫码登录，无需注册。", DetailEN: "Scan a QR code with WeChat: no sign-up needed.",
		AuthorizeURL: authorize,
	})
}
