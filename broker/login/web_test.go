package login

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
)

func TestWebLoginLinksMiniProgramUser(t *testing.T) {
	e := newEnv(t)
	e.sim.SetProfile("lily", "莉莉", "https://thirdwx.qlogo.cn/lily.png")
	sess := e.webLogin("lily")
	if !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Path != "/" {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Lax, Path=/", sess)
	}
	req, _ := http.NewRequest(http.MethodGet, e.URL+routeProfile, nil)
	req.AddCookie(sess)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	r.Status = resp.StatusCode
	body, _ := io.ReadAll(resp.Body)
	if err := jsonUnmarshal(string(body), &r); err != nil {
		t.Fatal(err)
	}
	r.Status = resp.StatusCode
	p := decodeData[profileView](t, r)
	if p.Nickname != "莉莉" || p.Avatar != "https://thirdwx.qlogo.cn/lily.png" || p.ID == "" {
		t.Fatalf("profile = %+v; want lily's nickname and avatar", p)
	}

	// The login page shows the profile.
	page := e.get(e.URL+routeLoginPage, sess)
	html, _ := io.ReadAll(page.Body)
	if page.StatusCode != 200 || !strings.Contains(string(html), "莉莉") || !strings.Contains(string(html), `id="profile"`) {
		t.Fatalf("login page with a session: %d\n%s", page.StatusCode, html)
	}
	if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("login page CSP = %q; want default-src 'none'", csp)
	}

	// The same person on the mini program is the same user (unionid).
	d := e.miniLogin("lily", "", "")
	if d.User.ID != p.ID {
		t.Fatalf("mini-program user id = %s; want the website user's %s", d.User.ID, p.ID)
	}
	if d.User.OpenID != e.sim.OpenID(mpAppID, "lily") {
		t.Errorf("openid = %q; want the mini program's", d.User.OpenID)
	}

	// The user's OAuth tokens are stored sealed.
	usr, err := e.srv.users.loadUser(t.Context(), "1")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.srv.users.secret(usr, fieldOAuth+webAppID)
	var rec oauthRecord
	if err != nil || jsonUnmarshal(raw, &rec) != nil || rec.AccessToken == "" || rec.RefreshToken == "" {
		t.Fatalf("oauth record = %q, %v", raw, err)
	}
	assertRedisLacks(t, e, rec.AccessToken)
	assertRedisLacks(t, e, rec.RefreshToken)

	// Web logout ends the session.
	req, _ = http.NewRequest(http.MethodPost, e.URL+routeWebLogout, strings.NewReader(""))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(sess)
	lo, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lo.Body.Close()
	if lo.StatusCode != http.StatusSeeOther || lo.Header.Get("Location") != routeLoginPage {
		t.Fatalf("web logout = %d → %q; want 303 to /login", lo.StatusCode, lo.Header.Get("Location"))
	}
	if c := cookieNamed(lo, sessionCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("web logout does not clear the cookie: %+v", c)
	}
	page = e.get(e.URL+routeLoginPage, sess)
	html, _ = io.ReadAll(page.Body)
	if strings.Contains(string(html), `id="profile"`) || !strings.Contains(string(html), `id="wechat-login"`) {
		t.Fatalf("login page after logout still shows the profile:\n%s", html)
	}
	assertLoginCount(t, e, metrics.FlowWeb, metrics.ResultSuccess, 1)
}

// startWeb begins the website flow: authorize, then the simulator's confirm
// (or decline) for person; it returns the state cookie and the callback URL.
func (e *env) startWeb(returnTo, person string, confirm bool) (*http.Cookie, string) {
	e.t.Helper()
	u := e.URL + routeWebAuthorize
	if returnTo != "" {
		u += "?return_to=" + url.QueryEscape(returnTo)
	}
	resp := e.get(u)
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("authorize: %d; want 302", resp.StatusCode)
	}
	c := cookieNamed(resp, stateCookie)
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 600 {
		e.t.Fatalf("state cookie = %+v; want HttpOnly, SameSite=Lax, 10 minutes", c)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if !strings.HasPrefix(loc.String(), e.sim.URL+"/connect/qrconnect?") || loc.Query().Get("state") == "" || strings.Contains(c.Value, loc.Query().Get("state")) ||
		loc.Query().Get("redirect_uri") != e.cfg.Login.Web.RedirectURI || loc.Query().Get("scope") != "snsapi_login" {
		e.t.Fatalf("authorize redirects to %s", loc)
	}
	q := loc.Query()
	q.Set("person", person)
	if !confirm {
		q.Set("action", "decline")
	}
	cr := e.get(e.sim.URL + "/connect/qrconnect/confirm?" + q.Encode())
	return c, cr.Header.Get("Location")
}

func TestWebCallbackRejectsAttacks(t *testing.T) {
	e := newEnv(t, withCallbackBurst(100))
	body := func(r *http.Response) string {
		b, _ := io.ReadAll(r.Body)
		return string(b)
	}

	t.Run("missing state", func(t *testing.T) {
		c, cb := e.startWeb("", "mike", true)
		u, _ := url.Parse(cb)
		q := u.Query()
		q.Del("state")
		u.RawQuery = q.Encode()
		if r := e.get(u.String(), c); r.StatusCode != 400 {
			t.Fatalf("status %d; want 400", r.StatusCode)
		}
	})
	t.Run("no state cookie", func(t *testing.T) {
		_, cb := e.startWeb("", "mike", true)
		if r := e.get(cb); r.StatusCode != 403 {
			t.Fatalf("status %d; want 403", r.StatusCode)
		}
	})
	t.Run("mismatched state", func(t *testing.T) {
		c1, _ := e.startWeb("", "mike", true)
		_, cb2 := e.startWeb("", "mallory", true) // the attacker's callback URL
		r := e.get(cb2, c1)
		if r.StatusCode != 403 || cookieNamed(r, sessionCookie) != nil {
			t.Fatalf("status %d; want 403 and no session", r.StatusCode)
		}
	})
	t.Run("reused state", func(t *testing.T) {
		c, cb := e.startWeb("", "mike", true)
		if r := e.get(cb, c); r.StatusCode != 302 {
			t.Fatalf("first use: %d; want 302", r.StatusCode)
		}
		r := e.get(cb, c)
		if r.StatusCode != 403 || !strings.Contains(body(r), "already used") {
			t.Fatalf("second use: %d; want 403 'already used'", r.StatusCode)
		}
	})
	t.Run("expired state", func(t *testing.T) {
		c, cb := e.startWeb("", "mike", true)
		e.clock.Advance(stateTTL + time.Second)
		r := e.get(cb, c)
		if r.StatusCode != 403 || !strings.Contains(body(r), "expired") {
			t.Fatalf("status %d; want 403 'expired'", r.StatusCode)
		}
	})
	t.Run("declined", func(t *testing.T) {
		c, cb := e.startWeb("", "mike", false)
		if strings.Contains(cb, "code=") {
			t.Fatalf("decline redirect carries a code: %s", cb)
		}
		r := e.get(cb, c)
		b := body(r)
		if r.StatusCode != 200 || !strings.Contains(b, "declined") || cookieNamed(r, sessionCookie) != nil {
			t.Fatalf("declined: %d\n%s", r.StatusCode, b)
		}
	})
	t.Run("return_to stays on allowed URLs", func(t *testing.T) {
		for _, bad := range []string{
			"https://evil.example/login",
			"http://evil.example" + strings.TrimPrefix(e.URL, "http://127.0.0.1") + "/login",
			strings.Replace(e.URL, "http:", "https:", 1) + "/login",
			e.URL + "/loginx",
			e.URL + "/admin",
			e.URL + "/login/../admin",
			e.URL + "/login/%2e%2e/admin",
			"//evil.example/login",
			"/login",
			"javascript:alert(1)",
			"http://user@" + strings.TrimPrefix(e.URL, "http://") + "/login",
			e.URL + `\@evil.example/login`,
		} {
			if r := e.get(e.URL + routeWebAuthorize + "?return_to=" + url.QueryEscape(bad)); r.StatusCode != 400 {
				t.Errorf("return_to %q: status %d; want 400", bad, r.StatusCode)
			}
		}
		for _, good := range []string{e.URL + "/login", e.URL + "/login/next", e.URL + "/login?tab=2"} {
			c, cb := e.startWeb(good, "nina", true)
			r := e.get(cb, c)
			if r.StatusCode != 302 || r.Header.Get("Location") != good {
				t.Errorf("return_to %q: %d → %q", good, r.StatusCode, r.Header.Get("Location"))
			}
		}
	})
}

func TestWebCallbackRateLimited(t *testing.T) {
	e := newEnv(t)
	var last int
	for range e.srv.callbackBurst + 1 {
		last = e.get(e.URL + routeWebCallback + "?state=x").StatusCode
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("request %d: status %d; want 429", e.srv.callbackBurst+1, last)
	}
	// Other routes are not limited.
	if r := e.get(e.URL + routeLoginPage); r.StatusCode != 200 {
		t.Fatalf("login page: %d", r.StatusCode)
	}
	assertLoginCount(t, e, metrics.FlowWeb, resultRateLimited, 1)
}

func TestHTTPMetricsUseRouteTemplates(t *testing.T) {
	e := newEnv(t)
	e.miniLogin("olga", "", "")
	e.get(e.URL + "/no/such/route?code=secret")
	if n := counterValue(t, e, "wxbroker_http_request_duration_seconds",
		map[string]string{"listener": "public", "route": routeWxLogin, "code": "200"}); n != 1 {
		t.Errorf("wx-login observations = %v; want 1", n)
	}
	if n := counterValue(t, e, "wxbroker_http_request_duration_seconds",
		map[string]string{"route": routeLabelNotFound, "code": "404"}); n != 1 {
		t.Errorf("unmatched observations = %v; want 1", n)
	}
}
