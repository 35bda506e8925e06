package wechattest

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestClassicOverlap(t *testing.T) {
	srv, clk := newTest(t, Options{Overlap: 300 * time.Second})
	a := classic(t, srv, testApp, testSecret)
	b := classic(t, srv, testApp, testSecret)
	if a == b {
		t.Fatal("two fetches returned the same classic token")
	}
	if got := useToken(t, srv, a); got != 0 {
		t.Fatalf("previous token right after the new fetch: errcode %d; want 0", got)
	}
	clk.Advance(299 * time.Second)
	if got := useToken(t, srv, a); got != 0 {
		t.Fatalf("previous token 299s after the new fetch: errcode %d; want 0", got)
	}
	clk.Advance(time.Second)
	if got := useToken(t, srv, a); got != 40001 {
		t.Fatalf("previous token when the overlap ended: errcode %d; want 40001", got)
	}
	if srv.TokenValid(testApp, a) || !srv.TokenValid(testApp, b) {
		t.Fatalf("TokenValid(old, new) = %v, %v; want false, true", srv.TokenValid(testApp, a), srv.TokenValid(testApp, b))
	}
	if got := useToken(t, srv, b); got != 0 {
		t.Fatalf("latest token: errcode %d; want 0", got)
	}
	if got := srv.Answered(40001); got != 1 {
		t.Fatalf("Answered(40001) = %d; want 1", got)
	}
}

func TestClassicLastFetchWins(t *testing.T) {
	srv, clk := newTest(t, Options{})
	a := classic(t, srv, testApp, testSecret)
	b := classic(t, srv, testApp, testSecret)
	c := classic(t, srv, testApp, testSecret)
	for _, tc := range []struct {
		name string
		tok  string
		want int
	}{
		{"older than previous dies at once", a, 40001},
		{"previous survives the overlap", b, 0},
		{"latest", c, 0},
	} {
		if got := useToken(t, srv, tc.tok); got != tc.want {
			t.Errorf("%s: errcode %d; want %d", tc.name, got, tc.want)
		}
	}
	clk.Advance(5 * time.Minute)
	if got := useToken(t, srv, b); got != 40001 {
		t.Errorf("previous after the overlap: errcode %d; want 40001", got)
	}
	// Another app's fetch does not touch this app's token.
	classic(t, srv, otherApp, otherSec)
	if got := useToken(t, srv, c); got != 0 {
		t.Errorf("latest after another app's fetch: errcode %d; want 0", got)
	}
	if got := srv.TokensIssued(testApp); got != 3 {
		t.Errorf("TokensIssued = %d; want 3", got)
	}
}

func TestClassicExpiry(t *testing.T) {
	srv, clk := newTest(t, Options{TokenTTL: time.Hour})
	r := classicReply(t, srv, testApp, testSecret)
	if got := r.num("expires_in"); got != 3600 {
		t.Fatalf("expires_in = %d; want 3600", got)
	}
	if _, ok := r["errcode"]; ok {
		t.Fatalf("success body carries an errcode: %v", r)
	}
	tok := r.str("access_token")
	if len(tok) < 64 {
		t.Fatalf("token %q is shorter than WeChat's", tok)
	}
	clk.Advance(time.Hour - time.Second)
	if got := useToken(t, srv, tok); got != 0 {
		t.Fatalf("token 1s before expiry: errcode %d; want 0", got)
	}
	clk.Advance(time.Second)
	if got := useToken(t, srv, tok); got != 42001 {
		t.Fatalf("expired token: errcode %d; want 42001", got)
	}
	// A token superseded and then also past its lifetime still reports why
	// it died first.
	b := classic(t, srv, testApp, testSecret)
	classic(t, srv, testApp, testSecret)
	classic(t, srv, testApp, testSecret)
	clk.Advance(2 * time.Hour)
	if got := useToken(t, srv, b); got != 40001 {
		t.Fatalf("superseded then expired token: errcode %d; want 40001", got)
	}
}

func TestGenericTokenChecks(t *testing.T) {
	srv, _ := newTest(t, Options{})
	tok := classic(t, srv, testApp, testSecret)
	for _, tc := range []struct {
		name, path, tok string
		want            int
	}{
		{"valid token", "/cgi-bin/message/custom/send", tok, 0},
		{"wxa path", "/wxa/msg_sec_check", tok, 0},
		{"missing token", "/cgi-bin/menu/get", "", 41001},
		{"malformed token", "/cgi-bin/menu/get", "bogus", 40014},
		{"unknown well-formed token", "/cgi-bin/menu/get", "90_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 40001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{}
			if tc.tok != "" {
				q.Set("access_token", tc.tok)
			}
			wantCode(t, tc.path, get(t, srv.URL, tc.path, q), tc.want)
		})
	}
	if got := srv.Calls(apiGeneric, testApp); got != 2 {
		t.Errorf("Calls(generic, app) = %d; want 2", got)
	}
}

func TestStableRotation(t *testing.T) {
	srv, clk := newTest(t, Options{})
	first := stable(t, srv, testApp, testSecret, false)
	s1 := first.str("access_token")
	if got := first.num("expires_in"); got != 7200 {
		t.Fatalf("first expires_in = %d; want 7200", got)
	}
	// Stable and classic tokens are isolated.
	classic(t, srv, testApp, testSecret)
	classic(t, srv, testApp, testSecret)

	clk.Advance(1000 * time.Second)
	r := stable(t, srv, testApp, testSecret, false)
	if r.str("access_token") != s1 || r.num("expires_in") != 6200 {
		t.Fatalf("normal call at +1000s = %s/%d; want the same token with 6200 left", r.str("access_token"), r.num("expires_in"))
	}
	clk.Advance(5900 * time.Second) // 300s left: inside the rotation window
	r = stable(t, srv, testApp, testSecret, false)
	s2 := r.str("access_token")
	if s2 == s1 || r.num("expires_in") != 7200 {
		t.Fatalf("call inside the window = %d left, same=%v; want a successor with 7200", r.num("expires_in"), s2 == s1)
	}
	if got := useToken(t, srv, s1); got != 0 {
		t.Fatalf("old stable token after rotation: errcode %d; want 0", got)
	}
	clk.Advance(100 * time.Second)
	r = stable(t, srv, testApp, testSecret, false)
	if r.str("access_token") != s2 || r.num("expires_in") != 7100 {
		t.Fatalf("call after rotation = %d left, successor=%v; want the successor with 7100", r.num("expires_in"), r.str("access_token") == s2)
	}
	clk.Advance(200 * time.Second) // the old one's own expiry
	if got := useToken(t, srv, s1); got != 42001 {
		t.Fatalf("old stable token at its expiry: errcode %d; want 42001", got)
	}
	if got := useToken(t, srv, s2); got != 0 {
		t.Fatalf("successor: errcode %d; want 0", got)
	}
	if got := srv.TokensIssued(testApp); got != 4 {
		t.Fatalf("TokensIssued = %d; want 4 (2 stable, 2 classic)", got)
	}
}

func TestStableForce(t *testing.T) {
	srv, clk := newTest(t, Options{})
	s0 := stable(t, srv, testApp, testSecret, false).str("access_token")
	s1 := stable(t, srv, testApp, testSecret, true).str("access_token")
	if s1 == s0 {
		t.Fatal("forced refresh returned the same token")
	}
	if got := useToken(t, srv, s0); got != 40001 {
		t.Fatalf("token replaced by a force: errcode %d; want 40001", got)
	}
	clk.Advance(29 * time.Second)
	r := stable(t, srv, testApp, testSecret, true)
	if r.str("access_token") != s1 || r.num("expires_in") != 7200-29 {
		t.Fatalf("force within 30s = %v; want the same token with %d left", r, 7200-29)
	}
	clk.Advance(time.Second)
	s2 := stable(t, srv, testApp, testSecret, true).str("access_token")
	if s2 == s1 {
		t.Fatal("force 30s after the previous one was ignored")
	}
	// 2 forces used; 18 more are allowed today.
	for i := range 18 {
		clk.Advance(30 * time.Second)
		wantCode(t, "force", stable(t, srv, testApp, testSecret, true), 0)
		_ = i
	}
	clk.Advance(30 * time.Second)
	wantCode(t, "21st force", stable(t, srv, testApp, testSecret, true), 45009)
	wantCode(t, "normal call after the force limit", stable(t, srv, testApp, testSecret, false), 0)

	// The limit resets at midnight UTC+8 (16:00 UTC).
	now := clk.Now()
	next := time.Date(now.Year(), now.Month(), now.Day(), 16, 0, 0, 0, time.UTC)
	clk.Advance(next.Sub(now) - time.Second)
	wantCode(t, "force at 23:59:59 UTC+8", stable(t, srv, testApp, testSecret, true), 45009)
	clk.Advance(time.Second)
	wantCode(t, "force at 00:00 UTC+8", stable(t, srv, testApp, testSecret, true), 0)
}

func TestStableTokenRequestChecks(t *testing.T) {
	srv, _ := newTest(t, Options{})
	for _, tc := range []struct {
		name string
		body map[string]any
		want int
	}{
		{"wrong grant_type", map[string]any{"grant_type": "x", "appid": testApp, "secret": testSecret}, 40002},
		{"missing appid", map[string]any{"grant_type": "client_credential", "secret": testSecret}, 41002},
		{"missing secret", map[string]any{"grant_type": "client_credential", "appid": testApp}, 41004},
		{"unknown appid", map[string]any{"grant_type": "client_credential", "appid": "wxnope", "secret": testSecret}, 40013},
		{"wrong secret", map[string]any{"grant_type": "client_credential", "appid": testApp, "secret": "nope"}, 40125},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, post(t, srv.URL, "/cgi-bin/stable_token", nil, tc.body), tc.want)
		})
	}
	resp := get(t, srv.URL, "/cgi-bin/stable_token", url.Values{"appid": {testApp}})
	wantCode(t, "GET stable_token", resp, 43002)
}

func TestCredentialErrors(t *testing.T) {
	srv, _ := newTest(t, Options{})
	srv.SetAllowedIPs(otherApp, "10.1.2.3", "192.168.0.0/16")
	for _, tc := range []struct {
		name   string
		appID  string
		secret string
		grant  string
		want   int
	}{
		{"ok", testApp, testSecret, "client_credential", 0},
		{"unknown appid", "wxunknown", testSecret, "client_credential", 40013},
		{"wrong secret", testApp, "wrong", "client_credential", 40125},
		{"ip not allowed", otherApp, otherSec, "client_credential", 40164},
		{"wrong grant_type", testApp, testSecret, "authorization_code", 40002},
		{"missing appid", "", testSecret, "client_credential", 41002},
		{"missing secret", testApp, "", "client_credential", 41004},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, srv.URL, "/cgi-bin/token", url.Values{
				"grant_type": {tc.grant}, "appid": {tc.appID}, "secret": {tc.secret},
			})
			wantCode(t, tc.name, r, tc.want)
		})
	}
	srv.SetAllowedIPs(otherApp, "127.0.0.1")
	classic(t, srv, otherApp, otherSec)
	srv.SetAllowedIPs(otherApp)
	classic(t, srv, otherApp, otherSec)
	if got := srv.TokensIssued(otherApp); got != 2 {
		t.Fatalf("TokensIssued(other) = %d; want 2", got)
	}
}

func TestDailyQuota(t *testing.T) {
	srv, clk := newTest(t, Options{DailyQuota: 3})
	srv.SetQuota(otherApp, apiToken, 1)
	for i := range 3 {
		classic(t, srv, testApp, testSecret)
		_ = i
	}
	wantCode(t, "4th fetch", classicReply(t, srv, testApp, testSecret), 45009)
	// Quotas are per API: stable_token still has its own.
	wantCode(t, "stable after token quota", stable(t, srv, testApp, testSecret, false), 0)
	classic(t, srv, otherApp, otherSec)
	wantCode(t, "overridden quota", classicReply(t, srv, otherApp, otherSec), 45009)

	// Reset at midnight UTC+8: the clock starts at 12:00 UTC+8.
	clk.Advance(12*time.Hour - time.Second)
	wantCode(t, "23:59:59 UTC+8", classicReply(t, srv, testApp, testSecret), 45009)
	clk.Advance(time.Second)
	wantCode(t, "00:00 UTC+8", classicReply(t, srv, testApp, testSecret), 0)
}

func TestClearQuota(t *testing.T) {
	srv, _ := newTest(t, Options{DailyQuota: 1})
	classic(t, srv, testApp, testSecret)
	wantCode(t, "quota used", classicReply(t, srv, testApp, testSecret), 45009)
	clear := func(secret string) reply {
		return post(t, srv.URL, "/cgi-bin/clear_quota/v2", url.Values{"appid": {testApp}, "appsecret": {secret}}, nil)
	}
	wantCode(t, "clear with a wrong secret", clear("wrong"), 40125)
	wantCode(t, "clear", clear(testSecret), 0)
	classic(t, srv, testApp, testSecret)
	// The JSON-body form works as well.
	r := post(t, srv.URL, "/cgi-bin/clear_quota/v2", nil, map[string]string{"appid": testApp, "appsecret": testSecret})
	wantCode(t, "clear with a JSON body", r, 0)
	for range 8 {
		wantCode(t, "clear", clear(testSecret), 0)
	}
	wantCode(t, "11th clear in a month", clear(testSecret), 48006)
}

func TestGetTicket(t *testing.T) {
	srv, clk := newTest(t, Options{TicketTTL: 7000 * time.Second})
	tok := classic(t, srv, testApp, testSecret)
	r := get(t, srv.URL, "/cgi-bin/ticket/getticket", url.Values{"access_token": {tok}, "type": {"jsapi"}})
	wantCode(t, "getticket", r, 0)
	if r.str("ticket") == "" || r.num("expires_in") != 7000 || r.str("errmsg") != "ok" {
		t.Fatalf("getticket = %v", r)
	}
	r = get(t, srv.URL, "/cgi-bin/ticket/getticket", url.Values{"access_token": {tok}, "type": {"nope"}})
	wantCode(t, "bad type", r, 40097)
	clk.Advance(2 * time.Hour)
	r = get(t, srv.URL, "/cgi-bin/ticket/getticket", url.Values{"access_token": {tok}, "type": {"jsapi"}})
	wantCode(t, "expired token", r, 42001)
	if got := srv.Calls(apiGetTicket, testApp); got != 3 {
		t.Fatalf("Calls(getticket) = %d; want 3", got)
	}
}

func TestComponentTokens(t *testing.T) {
	srv, _ := newTest(t, Options{})
	comp := func(ticket string) reply {
		return post(t, srv.URL, "/cgi-bin/component/api_component_token", nil, map[string]string{
			"component_appid": testApp, "component_appsecret": testSecret, "component_verify_ticket": ticket,
		})
	}
	wantCode(t, "empty ticket", comp(""), 61006)
	r := comp("ticket@@@any")
	ct := r.str("component_access_token")
	if ct == "" || r.num("expires_in") != 7200 {
		t.Fatalf("component token = %v", r)
	}
	if !srv.TokenValid(testApp, ct) {
		t.Fatal("TokenValid(component token) = false")
	}
	if got := useToken(t, srv, ct); got != 40001 {
		t.Fatalf("component token on a normal API: errcode %d; want 40001", got)
	}
	auth := func(tok, authorizer string) reply {
		return post(t, srv.URL, "/cgi-bin/component/api_authorizer_token", url.Values{"component_access_token": {tok}},
			map[string]string{"component_appid": testApp, "authorizer_appid": authorizer, "authorizer_refresh_token": "refreshtoken@@@x"})
	}
	wantCode(t, "unknown authorizer", auth(ct, "wxunknown"), 61003)
	r = auth(ct, otherApp)
	at := r.str("authorizer_access_token")
	if at == "" || r.str("authorizer_refresh_token") != "refreshtoken@@@x" {
		t.Fatalf("authorizer token = %v", r)
	}
	if got := useToken(t, srv, at); got != 0 {
		t.Fatalf("authorizer token on a normal API: errcode %d; want 0", got)
	}
	if got := srv.Calls(apiAuthorizerToken, otherApp); got != 1 {
		t.Fatalf("Calls(authorizer, authorizer app) = %d; want 1", got)
	}
}

func TestQuotaGetAndRidGet(t *testing.T) {
	srv, clk := newTest(t, Options{DailyQuota: 10})
	tok := classic(t, srv, testApp, testSecret)
	classic(t, srv, testApp, testSecret)
	r := post(t, srv.URL, "/cgi-bin/openapi/quota/get", url.Values{"access_token": {tok}}, map[string]string{"cgi_path": "/cgi-bin/token"})
	wantCode(t, "quota/get", r, 0)
	q, _ := r["quota"].(map[string]any)
	if q["daily_limit"] != 10.0 || q["used"] != 2.0 || q["remain"] != 8.0 {
		t.Fatalf("quota = %v; want 10/2/8", q)
	}
	if _, ok := r["rate_limit"].(map[string]any); !ok {
		t.Fatalf("quota/get lacks rate_limit: %v", r)
	}
	wantCode(t, "no leading slash", post(t, srv.URL, "/cgi-bin/openapi/quota/get", url.Values{"access_token": {tok}}, map[string]string{"cgi_path": "cgi-bin/token"}), 76021)
	wantCode(t, "sns path", post(t, srv.URL, "/cgi-bin/openapi/quota/get", url.Values{"access_token": {tok}}, map[string]string{"cgi_path": "/sns/userinfo"}), 76022)

	failed := get(t, srv.URL, "/cgi-bin/token", url.Values{"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {"wrong-secret"}})
	msg := failed.str("errmsg")
	rid := msg[len(msg)-len("6004f3da-1529ba72-5c345f67"):]
	ridGet := func(tok, rid string) reply {
		return post(t, srv.URL, "/cgi-bin/openapi/rid/get", url.Values{"access_token": {tok}}, map[string]string{"rid": rid})
	}
	r = ridGet(tok, rid)
	wantCode(t, "rid/get", r, 0)
	req, _ := r["request"].(map[string]any)
	reqURL, _ := req["request_url"].(string)
	if req["client_ip"] != "127.0.0.1" || reqURL == "" || req["invoke_time"] != float64(clk.Now().Unix()) {
		t.Fatalf("rid request = %v", req)
	}
	if strings.Contains(reqURL, "wrong-secret") {
		t.Fatalf("rid request_url leaks the secret: %s", reqURL)
	}
	wantCode(t, "malformed rid", ridGet(tok, "xyz"), 76002)
	wantCode(t, "unknown rid", ridGet(tok, "00000000-00000000-00000000"), 76001)
	other := classic(t, srv, otherApp, otherSec)
	wantCode(t, "another app's rid", ridGet(other, rid), 76003)
	clk.Advance(7*24*time.Hour + time.Minute)
	fresh := classic(t, srv, testApp, testSecret)
	wantCode(t, "stale rid", ridGet(fresh, rid), 76004)
}
