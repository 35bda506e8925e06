package wechat_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// Integration tests: every client call against the WeChat simulator.

const (
	simApp     = "wx00000000000000a1"
	simSecret  = "sim-secret-a1-0123456789abcdef"
	simApp2    = "wx00000000000000b2"
	simSecret2 = "sim-secret-b2-0123456789abcdef"
)

type simEnv struct {
	sim   *wechattest.Server
	clock *clocktest.Clock
	c     *wechat.Client
}

// newSimEnv starts a simulator with two apps and a client pointed at it.
// Each env has its own client, hence its own connections.
func newSimEnv(t *testing.T, opts wechattest.Options) *simEnv {
	t.Helper()
	clk := clocktest.New(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
	opts.Now = clk.Now
	srv := wechattest.NewServer(opts)
	t.Cleanup(srv.Close)
	srv.AddApp(simApp, simSecret)
	srv.AddApp(simApp2, simSecret2)
	return &simEnv{sim: srv, clock: clk, c: newSimClient(t, wechat.Options{BaseURL: srv.URL})}
}

func newSimClient(t *testing.T, opts wechat.Options) *wechat.Client {
	t.Helper()
	c, err := wechat.New(opts)
	if err != nil {
		t.Fatalf("wechat.New = %v", err)
	}
	return c
}

// wantCode fails unless err is an *APIError with code, and returns it.
func wantCode(t *testing.T, err error, code int) *wechat.APIError {
	t.Helper()
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("err = %v; want errcode %d", err, code)
	}
	if ae.RID == "" {
		t.Errorf("APIError %d has no rid (errmsg %q)", code, ae.Msg)
	}
	return ae
}

func mustToken(t *testing.T, e *simEnv, appID, secret string) string {
	t.Helper()
	tok, err := e.c.Token(t.Context(), appID, secret)
	if err != nil {
		t.Fatalf("Token(%s) = %v", appID, err)
	}
	return tok.AccessToken
}

func TestSimClassicToken(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	first, err := e.c.Token(ctx, simApp, simSecret)
	if err != nil || first.ExpiresIn != 7200*time.Second || !e.sim.TokenValid(simApp, first.AccessToken) {
		t.Fatalf("Token = %+v, %v; want a valid token for 7200s", first, err)
	}
	second := mustToken(t, e, simApp, simSecret)
	// The previous token survives the overlap, then the generic API rejects it.
	if err := e.c.Call(ctx, "POST", "/cgi-bin/message/custom/send", first.AccessToken, map[string]string{"touser": "o"}, nil); err != nil {
		t.Fatalf("Call with the previous token inside the overlap = %v", err)
	}
	e.clock.Advance(301 * time.Second)
	ae := wantCode(t, e.c.Call(ctx, "POST", "/cgi-bin/message/custom/send", first.AccessToken, nil, nil), 40001)
	if !ae.InvalidCredential() || ae.API != wechat.APIGeneric {
		t.Errorf("superseded token: %+v InvalidCredential = false; want true", ae)
	}
	e.clock.Advance(7200 * time.Second)
	if ae := wantCode(t, e.c.Call(ctx, "GET", "/cgi-bin/user/get", second, nil, nil), 42001); !ae.InvalidCredential() {
		t.Error("expired token: InvalidCredential = false")
	}
	if ae := wantCode(t, e.c.Call(ctx, "GET", "/cgi-bin/user/get", "garbage", nil, nil), 40014); !ae.InvalidCredential() {
		t.Error("malformed token: InvalidCredential = false")
	}
}

func TestSimCredentialErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *simEnv)
		call  func(ctx context.Context, c *wechat.Client) error
		code  int
		check func(*wechat.APIError) bool
	}{
		{"token wrong secret", nil, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Token(ctx, simApp, "wrong-secret-0000")
			return err
		}, 40125, (*wechat.APIError).ConfigError},
		{"token unknown appid", nil, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Token(ctx, "wx0000000000000fff", simSecret)
			return err
		}, 40013, (*wechat.APIError).ConfigError},
		{"token missing secret", nil, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Token(ctx, simApp, "")
			return err
		}, 41004, (*wechat.APIError).ConfigError},
		{"stable_token wrong secret", nil, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.StableToken(ctx, simApp, "wrong-secret-0000", false)
			return err
		}, 40125, (*wechat.APIError).ConfigError},
		{"token IP not whitelisted", func(e *simEnv) { e.sim.SetAllowedIPs(simApp, "10.1.2.3") }, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Token(ctx, simApp, simSecret)
			return err
		}, 40164, (*wechat.APIError).ConfigError},
		{"jscode2session IP not whitelisted", func(e *simEnv) { e.sim.SetAllowedIPs(simApp, "10.0.0.0/8") }, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Code2Session(ctx, simApp, simSecret, "whatever")
			return err
		}, 40164, (*wechat.APIError).ConfigError},
		{"component token IP not whitelisted", func(e *simEnv) { e.sim.SetAllowedIPs(simApp, "10.1.2.3") }, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.ComponentToken(ctx, simApp, simSecret, "ticket")
			return err
		}, 61004, (*wechat.APIError).ConfigError},
		{"token daily quota", func(e *simEnv) {
			e.sim.SetQuota(simApp, wechat.APIToken, 1)
			_, _ = e.c.Token(context.Background(), simApp, simSecret)
		}, func(ctx context.Context, c *wechat.Client) error {
			_, err := c.Token(ctx, simApp, simSecret)
			return err
		}, 45009, (*wechat.APIError).QuotaExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSimEnv(t, wechattest.Options{})
			if tt.setup != nil {
				tt.setup(e)
			}
			err := tt.call(t.Context(), e.c)
			ae := wantCode(t, err, tt.code)
			if !tt.check(ae) {
				t.Errorf("%+v: classifier = false; want true", ae)
			}
			for _, s := range []string{simSecret, "wrong-secret-0000"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q leaks the secret", err)
				}
			}
		})
	}
}

func TestSimStableToken(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{ForceDailyLimit: 2})
	ctx := t.Context()
	a, err := e.c.StableToken(ctx, simApp, simSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	b, err := e.c.StableToken(ctx, simApp, simSecret, false)
	if err != nil || b.AccessToken != a.AccessToken || b.ExpiresIn != a.ExpiresIn-time.Hour {
		t.Fatalf("normal-mode StableToken = %+v, %v; want the same token with 1h less (%+v)", b, err, a)
	}
	forced, err := e.c.StableToken(ctx, simApp, simSecret, true)
	if err != nil || forced.AccessToken == a.AccessToken || e.sim.TokenValid(simApp, a.AccessToken) {
		t.Fatalf("forced StableToken = %+v, %v; want a new token and the old one dead", forced, err)
	}
	again, err := e.c.StableToken(ctx, simApp, simSecret, true)
	if err != nil || again.AccessToken != forced.AccessToken {
		t.Fatalf("second force within 30s = %+v, %v; want the same token back", again, err)
	}
	e.clock.Advance(31 * time.Second)
	if _, err := e.c.StableToken(ctx, simApp, simSecret, true); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(31 * time.Second)
	_, err = e.c.StableToken(ctx, simApp, simSecret, true)
	if ae := wantCode(t, err, 45009); !ae.QuotaExceeded() || ae.API != wechat.APIStableToken {
		t.Errorf("third force: %+v; want a stable_token quota error", ae)
	}
	// Classic and stable tokens are separate: a classic fetch leaves the stable token alive.
	cur, _ := e.c.StableToken(ctx, simApp, simSecret, false)
	mustToken(t, e, simApp, simSecret)
	if !e.sim.TokenValid(simApp, cur.AccessToken) {
		t.Error("classic fetch killed the stable token")
	}
}

func TestSimTicket(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	tok := mustToken(t, e, simApp, simSecret)
	for _, typ := range []string{"jsapi", "wx_card"} {
		tk, err := e.c.Ticket(t.Context(), tok, typ)
		if err != nil || tk.Ticket == "" || tk.ExpiresIn != 7200*time.Second {
			t.Fatalf("Ticket(%s) = %+v, %v", typ, tk, err)
		}
	}
	_, err := e.c.Ticket(t.Context(), "90_"+strings.Repeat("x", 30), "jsapi")
	if ae := wantCode(t, err, 40001); !ae.InvalidCredential() {
		t.Errorf("Ticket with an unknown token: %+v InvalidCredential = false", ae)
	}
	e.clock.Advance(7201 * time.Second)
	_, err = e.c.Ticket(t.Context(), tok, "jsapi")
	wantCode(t, err, 42001)
}

func TestSimMiniProgramLogin(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	code := e.sim.MintLoginCode(simApp, "alice")
	s, err := e.c.Code2Session(ctx, simApp, simSecret, code)
	if err != nil {
		t.Fatalf("Code2Session = %v", err)
	}
	if s.OpenID != e.sim.OpenID(simApp, "alice") || s.UnionID != e.sim.UnionID("alice") || s.SessionKey == "" {
		t.Errorf("Code2Session = %+v; want alice's openid and unionid", s)
	}
	_, err = e.c.Code2Session(ctx, simApp, simSecret, code)
	if ae := wantCode(t, err, 40163); !ae.Relogin() {
		t.Error("reused code: Relogin = false")
	}
	_, err = e.c.Code2Session(ctx, simApp, simSecret, "never-minted-code")
	wantCode(t, err, 40029)
	other := e.sim.MintLoginCode(simApp2, "alice")
	_, err = e.c.Code2Session(ctx, simApp, simSecret, other)
	wantCode(t, err, 40029)
	late := e.sim.MintLoginCode(simApp, "bob")
	e.clock.Advance(5*time.Minute + time.Second)
	_, err = e.c.Code2Session(ctx, simApp, simSecret, late)
	wantCode(t, err, 40029)
	_, err = e.c.Code2Session(ctx, simApp, simSecret, e.sim.MintRiskyLoginCode(simApp, "mallory"))
	if ae := wantCode(t, err, 40226); !ae.Relogin() {
		t.Error("risky user: Relogin = false")
	}

	// checkSessionKey: the latest session_key passes, a stale one gives 87009.
	tok := mustToken(t, e, simApp, simSecret)
	s1, err := e.c.Code2Session(ctx, simApp, simSecret, e.sim.MintLoginCode(simApp, "carol"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.CheckSession(ctx, tok, s1.OpenID, s1.SessionKey); err != nil {
		t.Fatalf("CheckSession(current key) = %v", err)
	}
	s2, err := e.c.Code2Session(ctx, simApp, simSecret, e.sim.MintLoginCode(simApp, "carol"))
	if err != nil {
		t.Fatal(err)
	}
	err = e.c.CheckSession(ctx, tok, s2.OpenID, s1.SessionKey)
	if ae := wantCode(t, err, 87009); !ae.Relogin() {
		t.Error("stale session_key: Relogin = false")
	}
	if strings.Contains(err.Error(), s1.SessionKey) || strings.Contains(err.Error(), tok) {
		t.Errorf("error %q leaks the session_key or token", err)
	}
}

func TestSimPhoneNumber(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	tok := mustToken(t, e, simApp, simSecret)
	tests := []struct{ phone, full, pure, cc string }{
		{"13800138000", "13800138000", "13800138000", "86"},
		{"+1 2025550123", "+12025550123", "2025550123", "1"},
	}
	for _, tt := range tests {
		p, err := e.c.UserPhoneNumber(ctx, tok, e.sim.MintPhoneCode(simApp, tt.phone))
		if err != nil {
			t.Fatalf("UserPhoneNumber(%s) = %v", tt.phone, err)
		}
		if p.PhoneNumber != tt.full || p.PurePhoneNumber != tt.pure || p.CountryCode != tt.cc ||
			p.Watermark.AppID != simApp || p.Watermark.Timestamp != e.clock.Now().Unix() {
			t.Errorf("UserPhoneNumber(%s) = %+v", tt.phone, p)
		}
	}
	code := e.sim.MintPhoneCode(simApp, "13800138000")
	if _, err := e.c.UserPhoneNumber(ctx, tok, code); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.UserPhoneNumber(ctx, tok, code)
	wantCode(t, err, 40163)
	_, err = e.c.UserPhoneNumber(ctx, tok, "unknown-phone-code")
	wantCode(t, err, 40029)
	tok2 := mustToken(t, e, simApp2, simSecret2)
	_, err = e.c.UserPhoneNumber(ctx, tok2, e.sim.MintPhoneCode(simApp, "13800138000"))
	wantCode(t, err, 40013)
}

func TestSimWebOAuth(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	e.sim.SetProfile("dave", "Dave", "https://thirdwx.qlogo.cn/dave/132")
	code := e.sim.MintOAuthCode(simApp, "dave")
	ot, err := e.c.OAuthAccessToken(ctx, simApp, simSecret, code)
	if err != nil {
		t.Fatalf("OAuthAccessToken = %v", err)
	}
	if ot.OpenID != e.sim.OpenID(simApp, "dave") || ot.UnionID != e.sim.UnionID("dave") || ot.RefreshToken == "" ||
		ot.Scope != "snsapi_login" || ot.ExpiresIn != 7200*time.Second {
		t.Errorf("OAuthAccessToken = %+v", ot)
	}
	_, err = e.c.OAuthAccessToken(ctx, simApp, simSecret, code)
	wantCode(t, err, 40163)
	_, err = e.c.OAuthAccessToken(ctx, simApp, "wrong-secret-0000", e.sim.MintOAuthCode(simApp, "dave"))
	wantCode(t, err, 40125)

	ui, err := e.c.UserInfo(ctx, ot.AccessToken, ot.OpenID)
	if err != nil || ui.Nickname != "Dave" || ui.HeadImgURL != "https://thirdwx.qlogo.cn/dave/132" || ui.UnionID != ot.UnionID {
		t.Fatalf("UserInfo = %+v, %v", ui, err)
	}
	if err := e.c.OAuthCheck(ctx, ot.AccessToken, ot.OpenID); err != nil {
		t.Fatalf("OAuthCheck = %v", err)
	}
	wantCode(t, e.c.OAuthCheck(ctx, ot.AccessToken, e.sim.OpenID(simApp, "eve")), 40003)
	_, err = e.c.UserInfo(ctx, ot.AccessToken, e.sim.OpenID(simApp, "eve"))
	wantCode(t, err, 40003)

	e.clock.Advance(7201 * time.Second)
	wantCode(t, e.c.OAuthCheck(ctx, ot.AccessToken, ot.OpenID), 42001)
	rt, err := e.c.OAuthRefreshToken(ctx, simApp, ot.RefreshToken)
	if err != nil || rt.AccessToken == ot.AccessToken || rt.OpenID != ot.OpenID {
		t.Fatalf("OAuthRefreshToken after expiry = %+v, %v; want a new token for the same user", rt, err)
	}
	if err := e.c.OAuthCheck(ctx, rt.AccessToken, rt.OpenID); err != nil {
		t.Fatalf("OAuthCheck(refreshed) = %v", err)
	}
	_, err = e.c.OAuthRefreshToken(ctx, simApp, "bogus-refresh-token")
	if ae := wantCode(t, err, 40030); !ae.Relogin() {
		t.Error("invalid refresh token: Relogin = false")
	}
}

func TestSimComponent(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	ct, err := e.c.ComponentToken(ctx, simApp, simSecret, "verify-ticket-1")
	if err != nil || ct.AccessToken == "" || ct.ExpiresIn != 7200*time.Second {
		t.Fatalf("ComponentToken = %+v, %v", ct, err)
	}
	at, err := e.c.AuthorizerToken(ctx, ct.AccessToken, simApp, simApp2, "authorizer-refresh-1")
	if err != nil || at.AccessToken == "" || at.RefreshToken != "authorizer-refresh-1" || !e.sim.TokenValid(simApp2, at.AccessToken) {
		t.Fatalf("AuthorizerToken = %+v, %v", at, err)
	}
	_, err = e.c.ComponentToken(ctx, simApp, "wrong-secret-0000", "verify-ticket-1")
	wantCode(t, err, 40125)
	_, err = e.c.ComponentToken(ctx, simApp, simSecret, "")
	if ae := wantCode(t, err, 61006); !ae.ConfigError() {
		t.Error("61006: ConfigError = false")
	}
	_, err = e.c.AuthorizerToken(ctx, ct.AccessToken, simApp, simApp2, "")
	wantCode(t, err, 61023)
	_, err = e.c.AuthorizerToken(ctx, "90_"+strings.Repeat("y", 30), simApp, simApp2, "authorizer-refresh-1")
	if ae := wantCode(t, err, 40001); !ae.InvalidCredential() {
		t.Error("authorizer token with a dead component token: InvalidCredential = false")
	}
}

func TestSimQuotaTools(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	ctx := t.Context()
	e.sim.SetQuota(simApp, wechat.APIToken, 2)
	mustToken(t, e, simApp, simSecret)
	mustToken(t, e, simApp, simSecret)
	_, err := e.c.Token(ctx, simApp, simSecret)
	ae := wantCode(t, err, 45009)

	q, err := e.c.APIQuota(ctx, mustStable(t, e), "/cgi-bin/token")
	if err != nil || q.DailyLimit != 2 || q.Used < 2 || q.Remain != 0 {
		t.Fatalf("APIQuota = %+v, %v; want the exhausted limit of 2", q, err)
	}
	_, err = e.c.APIQuota(ctx, mustStable(t, e), "cgi-bin/token")
	wantCode(t, err, 76021)
	_, err = e.c.APIQuota(ctx, mustStable(t, e), "/sns/jscode2session")
	wantCode(t, err, 76022)

	// The rid of the 45009 leads to the request, with the secret masked.
	info, err := e.c.RidInfo(ctx, mustStable(t, e), ae.RID)
	if err != nil {
		t.Fatalf("RidInfo(%s) = %v", ae.RID, err)
	}
	if info.ClientIP != "127.0.0.1" || !strings.Contains(info.RequestURL, "/cgi-bin/token") ||
		strings.Contains(info.RequestURL, simSecret) || !strings.Contains(info.ResponseBody, "45009") {
		t.Errorf("RidInfo = %+v", info)
	}
	_, err = e.c.RidInfo(ctx, mustStable(t, e), "00000000-00000000-00000000")
	wantCode(t, err, 76001)
	_, err = e.c.RidInfo(ctx, mustStable(t, e), "not-a-rid")
	wantCode(t, err, 76002)
	tok2 := mustToken(t, e, simApp2, simSecret2)
	_, err = e.c.RidInfo(ctx, tok2, ae.RID)
	wantCode(t, err, 76003)

	if err := e.c.ClearQuota(ctx, simApp, simSecret); err != nil {
		t.Fatalf("ClearQuota = %v", err)
	}
	if _, err := e.c.Token(ctx, simApp, simSecret); err != nil {
		t.Fatalf("Token after ClearQuota = %v", err)
	}
	wantCode(t, e.c.ClearQuota(ctx, simApp, "wrong-secret-0000"), 40125)
	for range 9 {
		if err := e.c.ClearQuota(ctx, simApp, simSecret); err != nil {
			t.Fatal(err)
		}
	}
	if ae := wantCode(t, e.c.ClearQuota(ctx, simApp, simSecret), 48006); !ae.ConfigError() {
		t.Error("48006: ConfigError = false")
	}
}

func mustStable(t *testing.T, e *simEnv) string {
	t.Helper()
	tok, err := e.c.StableToken(t.Context(), simApp, simSecret, false)
	if err != nil {
		t.Fatalf("StableToken = %v", err)
	}
	return tok.AccessToken
}

// TestSimFaults injects each simulator fault into each call and checks the
// error the client reports. Each case uses a fresh client, so the faulted
// request goes out on a fresh connection (net/http silently replays an
// idempotent GET once when a reused keep-alive connection is closed without
// an answer).
func TestSimFaults(t *testing.T) {
	type call struct {
		api  string
		mint bool // a processed call mints a token
		do   func(ctx context.Context, e *simEnv, c *wechat.Client) error
	}
	calls := []call{
		{wechat.APIToken, true, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.Token(ctx, simApp, simSecret)
			return err
		}},
		{wechat.APIStableToken, true, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.StableToken(ctx, simApp, simSecret, false)
			return err
		}},
		{wechat.APIGetTicket, false, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.Ticket(ctx, mustStable(t, e), "jsapi")
			return err
		}},
		{wechat.APIJSCode2Session, false, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.Code2Session(ctx, simApp, simSecret, e.sim.MintLoginCode(simApp, "p"))
			return err
		}},
		{wechat.APIPhoneNumber, false, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.UserPhoneNumber(ctx, mustStable(t, e), e.sim.MintPhoneCode(simApp, "13800138000"))
			return err
		}},
		{wechat.APIOAuthAccessToken, false, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.OAuthAccessToken(ctx, simApp, simSecret, e.sim.MintOAuthCode(simApp, "p"))
			return err
		}},
		{wechat.APIComponentToken, true, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			_, err := c.ComponentToken(ctx, simApp, simSecret, "ticket")
			return err
		}},
		{wechat.APIGeneric, false, func(ctx context.Context, e *simEnv, c *wechat.Client) error {
			return c.Call(ctx, "GET", "/cgi-bin/user/get", mustStable(t, e), nil, nil)
		}},
	}
	faults := []struct {
		name        string
		fault       wechattest.Fault
		wantCode    int // APIError code; 0: a transport error
		wantKind    wechat.TransportKind
		wantUnknown bool
		processed   bool
	}{
		{"502", wechattest.Fault{Status: 502}, 0, wechat.KindStatus, true, false},
		{"200 HTML", wechattest.Fault{Status: 200}, 0, wechat.KindHTML, true, false},
		{"invalid JSON", wechattest.Fault{InvalidJSON: true}, 0, wechat.KindInvalidJSON, true, false},
		{"errcode -1", wechattest.Fault{Errcode: -1}, -1, 0, false, false},
		{"errcode 45011", wechattest.Fault{Errcode: 45011}, 45011, 0, false, false},
		{"errcode 40001", wechattest.Fault{Errcode: 40001}, 40001, 0, false, false},
		{"drop", wechattest.Fault{Drop: true}, 0, wechat.KindConnection, true, false},
		{"drop response", wechattest.Fault{DropResponse: true}, 0, wechat.KindConnection, true, true},
		{"latency past timeout", wechattest.Fault{Latency: time.Minute}, 0, wechat.KindTimeout, true, false},
	}
	for _, f := range faults {
		for _, cl := range calls {
			t.Run(f.name+"/"+cl.api, func(t *testing.T) {
				e := newSimEnv(t, wechattest.Options{})
				c := newSimClient(t, wechat.Options{BaseURL: e.sim.URL, Timeout: 300 * time.Millisecond})
				before := e.sim.TokensIssued(simApp)
				e.sim.Fail(cl.api, 1, f.fault)
				// Setup calls (a token for getticket, …) run before the fault's API is hit.
				err := cl.do(t.Context(), e, c)
				minted := e.sim.TokensIssued(simApp) - before
				if cl.api != wechat.APIToken && cl.api != wechat.APIStableToken && cl.api != wechat.APIComponentToken {
					minted = 0 // the setup's own stable token
				}
				if f.wantCode != 0 {
					ae := wantCode(t, err, f.wantCode)
					if ae.API != cl.api {
						t.Errorf("APIError.API = %q; want %q", ae.API, cl.api)
					}
				} else {
					var te *wechat.TransportError
					if !errors.As(err, &te) || te.Kind != f.wantKind || te.API != cl.api {
						t.Fatalf("err = %v; want a %v transport error from %s", err, f.wantKind, cl.api)
					}
					if te.OutcomeUnknown() != f.wantUnknown || wechat.OutcomeUnknown(err) != f.wantUnknown {
						t.Errorf("OutcomeUnknown(%v) = %v; want %v", err, te.OutcomeUnknown(), f.wantUnknown)
					}
				}
				if cl.mint {
					wantMinted := 0
					if f.processed {
						wantMinted = 1
					}
					if minted != wantMinted {
						t.Errorf("tokens minted = %d; want %d", minted, wantMinted)
					}
				}
				if got := e.sim.Calls(cl.api, simApp); got != 1 {
					t.Errorf("simulator saw %d %s calls; want exactly 1 (no retry inside the client)", got, cl.api)
				}
				if strings.Contains(err.Error(), simSecret) {
					t.Errorf("error %q leaks the secret", err)
				}
			})
		}
	}
}

func TestSimFallback(t *testing.T) {
	t.Run("transport failure falls back", func(t *testing.T) {
		e := newSimEnv(t, wechattest.Options{})
		// The fallback is the same simulator under another path-free URL: the
		// fault applies to the first call only.
		c := newSimClient(t, wechat.Options{BaseURL: e.sim.URL, FallbackURLs: []string{e.sim.URL}})
		e.sim.Fail(wechat.APIStableToken, 1, wechattest.Fault{Status: 502})
		tok, err := c.StableToken(t.Context(), simApp, simSecret, false)
		if err != nil || !e.sim.TokenValid(simApp, tok.AccessToken) || e.sim.Calls(wechat.APIStableToken, simApp) != 2 {
			t.Fatalf("StableToken = %+v, %v (%d calls); want the fallback's valid token after 2 calls",
				tok, err, e.sim.Calls(wechat.APIStableToken, simApp))
		}
	})
	t.Run("errcode does not fall back", func(t *testing.T) {
		e := newSimEnv(t, wechattest.Options{})
		c := newSimClient(t, wechat.Options{BaseURL: e.sim.URL, FallbackURLs: []string{e.sim.URL}})
		e.sim.Fail(wechat.APIStableToken, 1, wechattest.Fault{Errcode: -1})
		_, err := c.StableToken(t.Context(), simApp, simSecret, false)
		wantCode(t, err, -1)
		if n := e.sim.Calls(wechat.APIStableToken, simApp); n != 1 {
			t.Errorf("simulator saw %d calls; want 1", n)
		}
	})
	t.Run("consumed login code is not resent", func(t *testing.T) {
		e := newSimEnv(t, wechattest.Options{})
		c := newSimClient(t, wechat.Options{BaseURL: e.sim.URL, FallbackURLs: []string{e.sim.URL}})
		e.sim.Fail(wechat.APIJSCode2Session, 1, wechattest.Fault{DropResponse: true})
		_, err := c.Code2Session(t.Context(), simApp, simSecret, e.sim.MintLoginCode(simApp, "p"))
		if !wechat.OutcomeUnknown(err) {
			t.Fatalf("Code2Session = %v; want an outcome-unknown transport error, not 40163 from a resend", err)
		}
		if n := e.sim.Calls(wechat.APIJSCode2Session, simApp); n != 1 {
			t.Errorf("simulator saw %d calls; want 1", n)
		}
	})
	t.Run("base URL with a path prefix", func(t *testing.T) {
		e := newSimEnv(t, wechattest.Options{})
		proxy := httptest.NewServer(http.StripPrefix("/wx", e.sim.Sim))
		t.Cleanup(proxy.Close)
		c := newSimClient(t, wechat.Options{BaseURL: proxy.URL + "/wx"})
		if _, err := c.StableToken(t.Context(), simApp, simSecret, false); err != nil {
			t.Fatalf("StableToken through a path prefix = %v", err)
		}
	})
}

// TestSimNoHiddenReplay pins that a call with side effects is never resent by
// net/http on a reused connection: the caller sees the unknown outcome.
func TestSimNoHiddenReplay(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{})
	mustToken(t, e, simApp, simSecret) // warms a keep-alive connection
	before := e.sim.TokensIssued(simApp)
	e.sim.Fail(wechat.APIToken, 1, wechattest.Fault{DropResponse: true})
	_, err := e.c.Token(t.Context(), simApp, simSecret)
	if !wechat.OutcomeUnknown(err) {
		t.Errorf("Token on a reused connection with a dropped answer = %v; want an outcome-unknown error", err)
	}
	if n := e.sim.TokensIssued(simApp) - before; n != 1 {
		t.Errorf("tokens minted = %d; want 1 (no hidden resend)", n)
	}
	e.sim.Fail(wechat.APIJSCode2Session, 1, wechattest.Fault{DropResponse: true})
	_, err = e.c.Code2Session(t.Context(), simApp, simSecret, e.sim.MintLoginCode(simApp, "x"))
	if !wechat.OutcomeUnknown(err) {
		t.Errorf("Code2Session on a reused connection with a dropped answer = %v; want an outcome-unknown error, not 40163", err)
	}
	// Read-only calls keep net/http's transparent resend.
	tok := mustStable(t, e)
	e.sim.Fail(wechat.APIGeneric, 1, wechattest.Fault{Drop: true})
	if err := e.c.Call(t.Context(), "GET", "/cgi-bin/user/get", tok, nil, nil); err != nil {
		t.Errorf("read-only GET after a drop on a reused connection = %v; want net/http's resend to succeed", err)
	}
}

// TestSimOpenPlatform walks a third-party platform through the simulator:
// ticket push, component token, pre-authorization code, a merchant's
// authorization, the code exchange, refreshes with rotation, recovery
// through the authorizer list, and revocation.
func TestSimOpenPlatform(t *testing.T) {
	const (
		compApp    = "wx00000000000000c3"
		compSecret = "component-secret-c3"
		merchant   = "wx00000000000000d4"
	)
	e := newSimEnv(t, wechattest.Options{TicketPushInterval: time.Hour})
	ctx := t.Context()
	if err := e.sim.AddComponent(wechattest.Component{
		AppID: compApp, Secret: compSecret, Token: "msg-token", EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
	}); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, "the first ticket", 5*time.Second, func() bool { return e.sim.VerifyTicket(compApp) != "" })
	first := e.sim.VerifyTicket(compApp)
	if err := e.c.StartPushTicket(ctx, compApp, compSecret); err != nil {
		t.Fatalf("StartPushTicket = %v", err)
	}
	waittest.For(t, "the ticket asked for", 5*time.Second, func() bool { return e.sim.VerifyTicket(compApp) != first })
	ae := wantCode(t, e.c.StartPushTicket(ctx, compApp, "wrong-secret"), 40125)
	if !ae.ConfigError() {
		t.Error("StartPushTicket with a wrong secret: ConfigError = false")
	}

	_, err := e.c.ComponentToken(ctx, compApp, compSecret, "ticket@@@made-up")
	wantCode(t, err, 61006)
	ct, err := e.c.ComponentToken(ctx, compApp, compSecret, e.sim.VerifyTicket(compApp))
	if err != nil {
		t.Fatalf("ComponentToken = %v", err)
	}
	pre, err := e.c.PreAuthCode(ctx, ct.AccessToken, compApp)
	if err != nil || pre.Code == "" || pre.ExpiresIn != 30*time.Minute {
		t.Fatalf("PreAuthCode = %+v, %v", pre, err)
	}

	code, err := e.sim.Authorize(ctx, compApp, merchant)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := e.c.QueryAuth(ctx, ct.AccessToken, compApp, code)
	if err != nil || auth.AuthorizerAppID != merchant || auth.RefreshToken == "" || !e.sim.TokenValid(merchant, auth.AccessToken) {
		t.Fatalf("QueryAuth = %+v, %v", auth, err)
	}
	_, err = e.c.QueryAuth(ctx, ct.AccessToken, compApp, code)
	if ae := wantCode(t, err, 61009); !ae.Reauthorize() {
		t.Error("QueryAuth with a used code: Reauthorize = false")
	}

	e.sim.SetRefreshRotation(compApp, true)
	at, err := e.c.AuthorizerToken(ctx, ct.AccessToken, compApp, merchant, auth.RefreshToken)
	if err != nil || at.RefreshToken == auth.RefreshToken || !e.sim.TokenValid(merchant, at.AccessToken) {
		t.Fatalf("AuthorizerToken with rotation = %+v, %v", at, err)
	}
	_, err = e.c.AuthorizerToken(ctx, ct.AccessToken, compApp, merchant, auth.RefreshToken)
	if ae := wantCode(t, err, 61023); !ae.Reauthorize() {
		t.Error("AuthorizerToken with a rotated-away refresh token: Reauthorize = false")
	}

	list, total, err := e.c.AuthorizerList(ctx, ct.AccessToken, compApp, 0, wechat.MaxAuthorizerPage)
	if err != nil || total != 1 || len(list) != 1 || list[0].AppID != merchant || list[0].RefreshToken != at.RefreshToken {
		t.Fatalf("AuthorizerList = %+v, %d, %v; want the rotated refresh token", list, total, err)
	}
	if _, _, err := e.c.AuthorizerList(ctx, ct.AccessToken, compApp, 0, 501); err == nil {
		t.Error("AuthorizerList(count 501) = nil error")
	}

	e.sim.SetAllowedIPs(compApp, "10.1.2.3")
	_, err = e.c.PreAuthCode(ctx, ct.AccessToken, compApp)
	wantCode(t, err, 61004)
	e.sim.SetAllowedIPs(compApp)

	if err := e.sim.Revoke(ctx, compApp, merchant); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.AuthorizerToken(ctx, ct.AccessToken, compApp, merchant, at.RefreshToken)
	wantCode(t, err, 61023)
	if err := e.c.Call(ctx, "GET", "/cgi-bin/menu/get", at.AccessToken, nil, nil); err == nil {
		t.Error("the authorizer token still works after revocation")
	}
}

// TestSimAuthorizerRotationLostAnswer: WeChat rotates the refresh token but
// the answer is lost. The client must not repeat the call on its fallback
// (the old refresh token is dead, a repeat gets 61023 and hides what
// happened); it reports OutcomeUnknown, and AuthorizerList recovers the
// new refresh token.
func TestSimAuthorizerRotationLostAnswer(t *testing.T) {
	const compApp, merchant = "wx00000000000000c5", "wx00000000000000d6"
	e := newSimEnv(t, wechattest.Options{TicketPushInterval: time.Hour})
	ctx := t.Context()
	if err := e.sim.AddComponent(wechattest.Component{AppID: compApp, Secret: "s", Token: "tok",
		EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", RotateRefreshTokens: true}); err != nil {
		t.Fatal(err)
	}
	ticket, _ := e.sim.PushTicket(ctx, compApp)
	c := newSimClient(t, wechat.Options{BaseURL: e.sim.URL, FallbackURLs: []string{e.sim.URL}})
	ct, err := c.ComponentToken(ctx, compApp, "s", ticket)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := e.sim.Authorize(ctx, compApp, merchant)
	auth, err := c.QueryAuth(ctx, ct.AccessToken, compApp, code)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.Fail(wechat.APIAuthorizerToken, 1, wechattest.Fault{DropResponse: true})
	_, err = c.AuthorizerToken(ctx, ct.AccessToken, compApp, merchant, auth.RefreshToken)
	if !wechat.OutcomeUnknown(err) {
		t.Fatalf("AuthorizerToken with a lost answer = %v; want an OutcomeUnknown transport error", err)
	}
	if n := e.sim.Calls(wechat.APIAuthorizerToken, merchant); n != 1 {
		t.Fatalf("simulator saw %d api_authorizer_token calls; want 1 (no repeat on the fallback)", n)
	}
	list, _, err := c.AuthorizerList(ctx, ct.AccessToken, compApp, 0, 10)
	if err != nil || len(list) != 1 || list[0].RefreshToken == auth.RefreshToken {
		t.Fatalf("AuthorizerList = %+v, %v; want the rotated refresh token", list, err)
	}
	if _, err := c.AuthorizerToken(ctx, ct.AccessToken, compApp, merchant, list[0].RefreshToken); err != nil {
		t.Fatalf("AuthorizerToken with the recovered refresh token = %v", err)
	}
}
