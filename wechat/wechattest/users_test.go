package wechattest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func code2session(t *testing.T, srv *Server, appID, secret, code string) reply {
	t.Helper()
	return get(t, srv.URL, "/sns/jscode2session", url.Values{
		"appid": {appID}, "secret": {secret}, "js_code": {code}, "grant_type": {"authorization_code"},
	})
}

func TestJSCode2Session(t *testing.T) {
	srv, clk := newTest(t, Options{CodeTTL: time.Minute})
	code := srv.MintLoginCode(testApp, "alice")
	r := code2session(t, srv, testApp, testSecret, code)
	wantCode(t, "first use", r, 0)
	if r.str("openid") != srv.OpenID(testApp, "alice") || r.str("unionid") != srv.UnionID("alice") || len(r.str("session_key")) != 24 {
		t.Fatalf("jscode2session = %v", r)
	}
	if srv.OpenID(testApp, "alice") == srv.OpenID(otherApp, "alice") || srv.OpenID(testApp, "alice") == srv.OpenID(testApp, "bob") {
		t.Fatal("openids are not distinct per app and person")
	}

	expired := srv.MintLoginCode(testApp, "bob")
	otherApps := srv.MintLoginCode(otherApp, "bob")
	risky := srv.MintRiskyLoginCode(testApp, "mallory")
	for _, tc := range []struct {
		name, appID, secret, code string
		advance                   time.Duration
		want                      int
	}{
		{"reused", testApp, testSecret, code, 0, 40163},
		{"unknown", testApp, testSecret, "0a1b2c3d4e5f", 0, 40029},
		{"another app's code", testApp, testSecret, otherApps, 0, 40029},
		{"risky user", testApp, testSecret, risky, 0, 40226},
		{"wrong secret", testApp, "nope", expired, 0, 40125},
		{"expired", testApp, testSecret, expired, time.Minute, 40029},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Advance(tc.advance)
			wantCode(t, tc.name, code2session(t, srv, tc.appID, tc.secret, tc.code), tc.want)
		})
	}
	srv.SetAllowedIPs(testApp, "10.0.0.1")
	wantCode(t, "ip not allowed", code2session(t, srv, testApp, testSecret, srv.MintLoginCode(testApp, "carol")), 40164)
}

func TestCheckSession(t *testing.T) {
	srv, _ := newTest(t, Options{})
	r := code2session(t, srv, testApp, testSecret, srv.MintLoginCode(testApp, "alice"))
	tok := classic(t, srv, testApp, testSecret)
	sign := func(key string) string {
		m := hmac.New(sha256.New, []byte(key))
		return hex.EncodeToString(m.Sum(nil))
	}
	check := func(sig string) reply {
		return get(t, srv.URL, "/wxa/checksession", url.Values{
			"access_token": {tok}, "openid": {r.str("openid")}, "signature": {sig}, "sig_method": {"hmac_sha256"},
		})
	}
	wantCode(t, "current session key", check(sign(r.str("session_key"))), 0)
	wantCode(t, "wrong key", check(sign("stale")), 87009)
	// A new login replaces the session key.
	code2session(t, srv, testApp, testSecret, srv.MintLoginCode(testApp, "alice"))
	wantCode(t, "replaced key", check(sign(r.str("session_key"))), 87009)
}

func TestPhoneNumber(t *testing.T) {
	srv, clk := newTest(t, Options{})
	tok := classic(t, srv, testApp, testSecret)
	phone := func(tok, code string) reply {
		q := url.Values{}
		if tok != "" {
			q.Set("access_token", tok)
		}
		return post(t, srv.URL, "/wxa/business/getuserphonenumber", q, map[string]string{"code": code})
	}
	code := srv.MintPhoneCode(testApp, "13800138000")
	r := phone(tok, code)
	wantCode(t, "phone", r, 0)
	info, _ := r["phone_info"].(map[string]any)
	wm, _ := info["watermark"].(map[string]any)
	if info["phoneNumber"] != "13800138000" || info["purePhoneNumber"] != "13800138000" || info["countryCode"] != 86.0 ||
		wm["appid"] != testApp || wm["timestamp"] != float64(clk.Now().Unix()) {
		t.Fatalf("phone_info = %v", info)
	}
	r = phone(tok, srv.MintPhoneCode(testApp, "+1 2025550123"))
	info, _ = r["phone_info"].(map[string]any)
	if info["phoneNumber"] != "+12025550123" || info["purePhoneNumber"] != "2025550123" || info["countryCode"] != 1.0 {
		t.Fatalf("foreign phone_info = %v", info)
	}

	otherTok := classic(t, srv, otherApp, otherSec)
	expiring := srv.MintPhoneCode(testApp, "13800138001")
	for _, tc := range []struct {
		name, tok, code string
		want            int
	}{
		{"reused code", tok, code, 40163},
		{"unknown code", tok, "nope", 40029},
		{"missing token", "", srv.MintPhoneCode(testApp, "1"), 41001},
		{"token of another app", otherTok, srv.MintPhoneCode(testApp, "1"), 40013},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.name, phone(tc.tok, tc.code), tc.want) })
	}
	superseded := tok
	classic(t, srv, testApp, testSecret)
	latest := classic(t, srv, testApp, testSecret)
	wantCode(t, "superseded token", phone(superseded, srv.MintPhoneCode(testApp, "1")), 40001)
	clk.Advance(5 * time.Minute)
	wantCode(t, "expired code", phone(latest, expiring), 40029)
	clk.Advance(2 * time.Hour)
	wantCode(t, "expired token", phone(latest, srv.MintPhoneCode(testApp, "1")), 42001)
}

// noRedirect is a client that returns redirects instead of following them.
func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestQRConnectPage(t *testing.T) {
	srv, _ := newTest(t, Options{})
	q := url.Values{"appid": {testApp}, "redirect_uri": {"http://127.0.0.1:9/cb?x=1"}, "response_type": {"code"},
		"scope": {"snsapi_login"}, "state": {"st<1>"}}
	resp, err := http.Get(srv.URL + "/connect/qrconnect?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("qrconnect: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`id="confirm"`, `id="decline"`, `name="person"`, `value="demo-user"`,
		`action="qrconnect/confirm"`, `value="st&lt;1&gt;"`, `value="http://127.0.0.1:9/cb?x=1"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, banned := range []string{"<script", "src=", "href="} {
		if strings.Contains(page, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
	for _, tc := range []struct {
		name string
		q    url.Values
	}{
		{"unknown appid", url.Values{"appid": {"wxnope"}, "redirect_uri": {"http://x/cb"}, "scope": {"snsapi_login"}}},
		{"bad redirect_uri", url.Values{"appid": {testApp}, "redirect_uri": {"/relative"}, "scope": {"snsapi_login"}}},
		{"bad scope", url.Values{"appid": {testApp}, "redirect_uri": {"http://x/cb"}, "scope": {"snsapi_base"}}},
	} {
		resp, err := http.Get(srv.URL + "/connect/qrconnect?" + tc.q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d; want 400", tc.name, resp.StatusCode)
		}
	}
}

func TestOAuthFlow(t *testing.T) {
	srv, clk := newTest(t, Options{})
	srv.SetProfile("bob", "Bob", "https://example.com/bob.png")
	form := url.Values{"appid": {testApp}, "redirect_uri": {"http://127.0.0.1:9/cb?x=1"}, "state": {"s1"},
		"person": {"bob"}, "action": {"confirm"}}
	resp, err := noRedirect().PostForm(srv.URL+"/connect/qrconnect/confirm", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("confirm: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if loc.Host != "127.0.0.1:9" || loc.Path != "/cb" || loc.Query().Get("x") != "1" || loc.Query().Get("state") != "s1" || loc.Query().Get("code") == "" {
		t.Fatalf("confirm redirect = %s", loc)
	}
	code := loc.Query().Get("code")

	exchange := func(code string) reply {
		return get(t, srv.URL, "/sns/oauth2/access_token", url.Values{
			"appid": {testApp}, "secret": {testSecret}, "code": {code}, "grant_type": {"authorization_code"}})
	}
	r := exchange(code)
	wantCode(t, "exchange", r, 0)
	openID := srv.OpenID(testApp, "bob")
	if r.str("openid") != openID || r.str("unionid") != srv.UnionID("bob") || r.str("scope") != "snsapi_login" ||
		r.num("expires_in") != 7200 || r.str("refresh_token") == "" {
		t.Fatalf("oauth2/access_token = %v", r)
	}
	wantCode(t, "code reused", exchange(code), 40163)
	at, rt := r.str("access_token"), r.str("refresh_token")

	info := get(t, srv.URL, "/sns/userinfo", url.Values{"access_token": {at}, "openid": {openID}})
	if info.str("nickname") != "Bob" || info.str("headimgurl") != "https://example.com/bob.png" || info.str("unionid") != srv.UnionID("bob") {
		t.Fatalf("userinfo = %v", info)
	}
	if _, ok := info["privilege"].([]any); !ok {
		t.Fatalf("userinfo privilege is not an array: %v", info)
	}
	wantCode(t, "userinfo wrong openid", get(t, srv.URL, "/sns/userinfo", url.Values{"access_token": {at}, "openid": {"ox"}}), 40003)
	wantCode(t, "sns/auth", get(t, srv.URL, "/sns/auth", url.Values{"access_token": {at}, "openid": {openID}}), 0)

	refresh := func(rt string) reply {
		return get(t, srv.URL, "/sns/oauth2/refresh_token", url.Values{
			"appid": {testApp}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
	}
	clk.Advance(time.Hour)
	r = refresh(rt)
	if r.str("access_token") != at || r.num("expires_in") != 7200 {
		t.Fatalf("refresh of a valid token = %v; want the same token extended", r)
	}
	clk.Advance(3 * time.Hour)
	wantCode(t, "sns/auth expired", get(t, srv.URL, "/sns/auth", url.Values{"access_token": {at}, "openid": {openID}}), 42001)
	r = refresh(rt)
	if r.str("access_token") == at || r.str("refresh_token") != rt {
		t.Fatalf("refresh of an expired token = %v; want a new token", r)
	}
	wantCode(t, "bad refresh token", refresh("nope"), 40030)
	clk.Advance(30 * 24 * time.Hour)
	wantCode(t, "refresh token after 30 days", refresh(rt), 40030)

	// OAuth codes live 2×CodeTTL and are single use per app.
	c2 := srv.MintOAuthCode(testApp, "bob")
	clk.Advance(10*time.Minute - time.Second)
	wantCode(t, "code before 10 minutes", exchange(c2), 0)
	c3 := srv.MintOAuthCode(testApp, "bob")
	clk.Advance(10 * time.Minute)
	wantCode(t, "code after 10 minutes", exchange(c3), 40029)
}

func TestQRConnectDecline(t *testing.T) {
	srv, _ := newTest(t, Options{})
	q := url.Values{"appid": {testApp}, "redirect_uri": {"https://app.example/cb"}, "state": {"s2"}, "action": {"decline"}}
	resp, err := noRedirect().Get(srv.URL + "/connect/qrconnect/confirm?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://app.example/cb?state=s2" {
		t.Fatalf("decline = %d %q; want 302 to https://app.example/cb?state=s2", resp.StatusCode, resp.Header.Get("Location"))
	}
	// GET with parameters and no person confirms as demo-user.
	q.Del("action")
	resp, err = noRedirect().Get(srv.URL + "/connect/qrconnect/confirm?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	r := get(t, srv.URL, "/sns/oauth2/access_token", url.Values{
		"appid": {testApp}, "secret": {testSecret}, "code": {loc.Query().Get("code")}, "grant_type": {"authorization_code"}})
	if r.str("openid") != srv.OpenID(testApp, "demo-user") {
		t.Fatalf("default person login = %v", r)
	}
}
