package wechattest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

const (
	compApp    = "wx00000000000000c1"
	compSecret = "component-secret-c1"
	compToken  = "component-msg-token"
	compKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	merchant   = "wx00000000000000d2"
)

// receiver is a component's event URL: it verifies and decrypts every
// push with msgcrypt and keeps the events.
type receiver struct {
	t     *testing.T
	srv   *httptest.Server
	crypt *msgcrypt.Crypter

	mu     sync.Mutex
	events []msgcrypt.Event
	raw    []string // query + body of each push, to spot replays
	answer string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	c, err := msgcrypt.New(compToken, compKey, compApp)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{t: t, crypt: c, answer: "success"}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || q.Get("encrypt_type") != "aes" {
		rc.t.Errorf("push: %s with encrypt_type %q; want POST, aes", r.Method, q.Get("encrypt_type"))
	}
	if got := msgcrypt.Signature(compToken, q.Get("timestamp"), q.Get("nonce"), ""); got != q.Get("signature") {
		rc.t.Errorf("push: signature %q; want %q", q.Get("signature"), got)
	}
	msg, err := rc.crypt.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body)
	if err != nil {
		rc.t.Errorf("push: Open = %v", err)
		http.Error(w, "bad push", http.StatusBadRequest)
		return
	}
	ev, err := msgcrypt.ParseEvent(msg)
	if err != nil {
		rc.t.Errorf("push: ParseEvent = %v", err)
	}
	rc.mu.Lock()
	rc.events = append(rc.events, ev)
	rc.raw = append(rc.raw, r.URL.RawQuery+"\n"+string(body))
	answer := rc.answer
	rc.mu.Unlock()
	_, _ = io.WriteString(w, answer)
}

// of returns the events of one InfoType received so far.
func (rc *receiver) of(info msgcrypt.InfoType) []msgcrypt.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []msgcrypt.Event
	for _, e := range rc.events {
		if e.InfoType == info {
			out = append(out, e)
		}
	}
	return out
}

// newComponentTest starts a simulator with a registered component whose
// event URL is a receiver. Pushes come every interval.
func newComponentTest(t *testing.T, interval time.Duration, rotate bool) (*Server, *receiver) {
	t.Helper()
	srv, _ := newTest(t, Options{TicketPushInterval: interval})
	rc := newReceiver(t)
	if err := srv.AddComponent(Component{
		AppID: compApp, Secret: compSecret, Token: compToken, EncodingAESKey: compKey,
		EventURL: rc.srv.URL + "/open/" + compApp + "/events", RotateRefreshTokens: rotate,
	}); err != nil {
		t.Fatal(err)
	}
	return srv, rc
}

func componentToken(t *testing.T, srv *Server, ticket string) reply {
	t.Helper()
	return post(t, srv.URL, "/cgi-bin/component/api_component_token", nil, map[string]string{
		"component_appid": compApp, "component_appsecret": compSecret, "component_verify_ticket": ticket,
	})
}

// firstTicket waits for the push AddComponent triggers and returns a
// component token minted with it.
func firstTicket(t *testing.T, srv *Server, rc *receiver) (ticket, ct string) {
	t.Helper()
	waittest.For(t, "the first ticket push", 5*time.Second, func() bool { return len(rc.of(msgcrypt.InfoVerifyTicket)) > 0 })
	ticket = rc.of(msgcrypt.InfoVerifyTicket)[0].VerifyTicket
	r := componentToken(t, srv, ticket)
	wantCode(t, "component token", r, 0)
	return ticket, r.str("component_access_token")
}

func compPost(t *testing.T, srv *Server, path, ct string, body map[string]any) reply {
	t.Helper()
	body["component_appid"] = compApp
	return post(t, srv.URL, path, url.Values{"component_access_token": {ct}}, body)
}

func TestComponentTicketPushes(t *testing.T) {
	srv, rc := newComponentTest(t, 30*time.Millisecond, false)
	waittest.For(t, "three ticket pushes", 5*time.Second, func() bool { return len(rc.of(msgcrypt.InfoVerifyTicket)) >= 3 })
	evs := rc.of(msgcrypt.InfoVerifyTicket)
	for _, e := range evs {
		if e.AppID != compApp || !strings.HasPrefix(e.VerifyTicket, "ticket@@@") {
			t.Fatalf("ticket event = %+v", e)
		}
	}
	if evs[0].VerifyTicket == evs[1].VerifyTicket {
		t.Fatal("two pushes carried the same ticket")
	}
	// The simulator counts a push once the answer is back, just after the
	// receiver has recorded it.
	waittest.For(t, "Pushes to count three", 5*time.Second, func() bool { return srv.Pushes(compApp, msgcrypt.InfoVerifyTicket) >= 3 })
	// Every pushed ticket works; the newest is VerifyTicket.
	for _, e := range evs[:3] {
		wantCode(t, "component token with a pushed ticket", componentToken(t, srv, e.VerifyTicket), 0)
	}
	if srv.VerifyTicket(compApp) == "" {
		t.Fatal("VerifyTicket is empty")
	}
	srv.Close() // stops the pushes
	srv.Reset()
	if got := srv.Pushes(compApp, msgcrypt.InfoVerifyTicket); got != 0 {
		t.Fatalf("Pushes after Reset = %d; want 0", got)
	}
}

func TestComponentTicketRules(t *testing.T) {
	srv, rc := newComponentTest(t, time.Hour, false)
	ticket, ct := firstTicket(t, srv, rc)
	if !srv.TokenValid(compApp, ct) {
		t.Fatal("component token not valid")
	}
	wantCode(t, "a ticket the simulator did not mint", componentToken(t, srv, "ticket@@@made-up"), 61006)
	wantCode(t, "no ticket", componentToken(t, srv, ""), 61006)
	r := post(t, srv.URL, "/cgi-bin/component/api_component_token", nil, map[string]string{
		"component_appid": compApp, "component_appsecret": "wrong", "component_verify_ticket": ticket,
	})
	wantCode(t, "wrong secret", r, 40125)

	// api_start_push_ticket: a push now, though the interval is an hour.
	wantCode(t, "start push wrong secret", post(t, srv.URL, "/cgi-bin/component/api_start_push_ticket", nil,
		map[string]string{"component_appid": compApp, "component_secret": "wrong"}), 40125)
	wantCode(t, "start push", post(t, srv.URL, "/cgi-bin/component/api_start_push_ticket", nil,
		map[string]string{"component_appid": compApp, "component_secret": compSecret}), 0)
	waittest.For(t, "the push asked for", 5*time.Second, func() bool { return len(rc.of(msgcrypt.InfoVerifyTicket)) >= 2 })

	// IP allow-list: 61004.
	srv.SetAllowedIPs(compApp, "10.9.9.9")
	wantCode(t, "component token from outside the allow-list", componentToken(t, srv, ticket), 61004)
	wantCode(t, "preauthcode from outside the allow-list", compPost(t, srv, "/cgi-bin/component/api_create_preauthcode", ct, map[string]any{}), 61004)
	srv.SetAllowedIPs(compApp)
}

func TestComponentTicketExpiry(t *testing.T) {
	srv, clk := newTest(t, Options{TicketPushInterval: time.Hour})
	if err := srv.AddComponent(Component{AppID: compApp, Secret: compSecret, Token: compToken, EncodingAESKey: compKey}); err != nil {
		t.Fatal(err)
	}
	ticket, err := srv.PushTicket(t.Context(), compApp) // no event URL: minted only
	// (The push AddComponent asked for may mint another ticket meanwhile.)
	if err != nil || ticket == "" || srv.VerifyTicket(compApp) == "" {
		t.Fatalf("PushTicket = %q, %v", ticket, err)
	}
	clk.Advance(12*time.Hour - time.Second)
	wantCode(t, "a ticket just under 12 h old", componentToken(t, srv, ticket), 0)
	clk.Advance(time.Second)
	wantCode(t, "a ticket 12 h old", componentToken(t, srv, ticket), 61005)
}

func TestAuthorizationPageFlow(t *testing.T) {
	srv, rc := newComponentTest(t, time.Hour, false)
	_, ct := firstTicket(t, srv, rc)
	r := compPost(t, srv, "/cgi-bin/component/api_create_preauthcode", ct, map[string]any{})
	wantCode(t, "preauthcode", r, 0)
	pre := r.str("pre_auth_code")
	if pre == "" || r.num("expires_in") != 1800 {
		t.Fatalf("preauthcode = %v", r)
	}
	callback := "https://platform.example/authorized?state=s1"
	page := srv.URL + "/cgi-bin/componentloginpage?" + url.Values{
		"component_appid": {compApp}, "pre_auth_code": {pre}, "redirect_uri": {callback}, "auth_type": {"3"},
	}.Encode()
	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(html), compApp) || !strings.Contains(string(html), `action="componentloginpage/confirm"`) {
		t.Fatalf("authorization page: %d %s", resp.StatusCode, html)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	confirm := func() *http.Response {
		resp, err := noRedirect.PostForm(srv.URL+"/cgi-bin/componentloginpage/confirm", url.Values{
			"component_appid": {compApp}, "pre_auth_code": {pre}, "redirect_uri": {callback}, "authorizer_appid": {merchant},
		})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp = confirm()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("confirm: status %d; want 302", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), "https://platform.example/authorized?") || loc.Query().Get("state") != "s1" {
		t.Fatalf("confirm redirects to %q", resp.Header.Get("Location"))
	}
	code := loc.Query().Get("auth_code")
	if code == "" || loc.Query().Get("expires_in") != "3600" {
		t.Fatalf("confirm redirect query = %v", loc.Query())
	}
	// The event was pushed before the redirect.
	evs := rc.of(msgcrypt.InfoAuthorized)
	if len(evs) != 1 || evs[0].AuthorizationCode != code || evs[0].AuthorizerAppID != merchant || evs[0].PreAuthCode != pre {
		t.Fatalf("authorized events = %+v; want one with code %q", evs, code)
	}
	if resp := confirm(); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a used pre_auth_code: status %d; want 400", resp.StatusCode)
	}

	r = compPost(t, srv, "/cgi-bin/component/api_query_auth", ct, map[string]any{"authorization_code": code})
	wantCode(t, "query_auth", r, 0)
	info, _ := r["authorization_info"].(map[string]any)
	at, _ := info["authorizer_access_token"].(string)
	rt, _ := info["authorizer_refresh_token"].(string)
	if info["authorizer_appid"] != merchant || at == "" || rt == "" || info["expires_in"] != float64(7200) {
		t.Fatalf("query_auth = %v", r)
	}
	if cur, ok := srv.RefreshToken(compApp, merchant); !ok || cur != rt {
		t.Fatalf("RefreshToken = %q, %v; want %q", cur, ok, rt)
	}
	if got := useToken(t, srv, at); got != 0 {
		t.Fatalf("authorizer token on an API: errcode %d", got)
	}
	wantCode(t, "a used authorization code", compPost(t, srv, "/cgi-bin/component/api_query_auth", ct, map[string]any{"authorization_code": code}), 61009)
	wantCode(t, "an unknown authorization code", compPost(t, srv, "/cgi-bin/component/api_query_auth", ct, map[string]any{"authorization_code": "queryauthcode@@@x"}), 61009)

	// Authorizing again: updateauthorized, same refresh token.
	code2, err := srv.Authorize(t.Context(), compApp, merchant)
	if err != nil {
		t.Fatal(err)
	}
	if evs := rc.of(msgcrypt.InfoUpdateAuthorized); len(evs) != 1 || evs[0].AuthorizationCode != code2 {
		t.Fatalf("updateauthorized events = %+v", evs)
	}
	if cur, _ := srv.RefreshToken(compApp, merchant); cur != rt {
		t.Fatal("updateauthorized changed the refresh token")
	}
}

func TestAuthorizationCodeExpiry(t *testing.T) {
	srv, clk := newTest(t, Options{TicketPushInterval: time.Hour})
	if err := srv.AddComponent(Component{AppID: compApp, Secret: compSecret, Token: compToken, EncodingAESKey: compKey}); err != nil {
		t.Fatal(err)
	}
	ticket, _ := srv.PushTicket(t.Context(), compApp)
	ct := componentToken(t, srv, ticket).str("component_access_token")
	code, err := srv.Authorize(t.Context(), compApp, merchant)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	wantCode(t, "an expired authorization code", compPost(t, srv, "/cgi-bin/component/api_query_auth", ct, map[string]any{"authorization_code": code}), 61010)
}

// authorizerToken calls api_authorizer_token.
func authorizerToken(t *testing.T, srv *Server, ct, authorizer, rt string) reply {
	t.Helper()
	return compPost(t, srv, "/cgi-bin/component/api_authorizer_token", ct, map[string]any{
		"authorizer_appid": authorizer, "authorizer_refresh_token": rt,
	})
}

func TestAuthorizerTokenRules(t *testing.T) {
	srv, rc := newComponentTest(t, time.Hour, false)
	_, ct := firstTicket(t, srv, rc)
	if _, err := srv.Authorize(t.Context(), compApp, merchant); err != nil {
		t.Fatal(err)
	}
	rt, _ := srv.RefreshToken(compApp, merchant)

	wantCode(t, "an account that never authorized", authorizerToken(t, srv, ct, "wx00000000000000e9", rt), 61003)
	wantCode(t, "a made-up refresh token", authorizerToken(t, srv, ct, merchant, "refreshtoken@@@nope"), 61023)
	wantCode(t, "a dead component token", authorizerToken(t, srv, "90_"+strings.Repeat("z", 40), merchant, rt), 40001)
	r := authorizerToken(t, srv, ct, merchant, rt)
	wantCode(t, "authorizer token", r, 0)
	first := r.str("authorizer_access_token")
	if r.str("authorizer_refresh_token") != rt || !srv.TokenValid(merchant, first) {
		t.Fatalf("authorizer token = %v", r)
	}
	// Last fetch wins, as for classic tokens.
	second := authorizerToken(t, srv, ct, merchant, rt).str("authorizer_access_token")
	if second == first || !srv.TokenValid(merchant, second) {
		t.Fatalf("second authorizer token %q", second)
	}
	if d, ok := srv.TokenDeath(merchant, first); !ok || d.IsZero() {
		t.Fatal("first authorizer token has no death time after a second fetch")
	}

	// Rotation: a new refresh token each time; the one sent dies.
	srv.SetRefreshRotation(compApp, true)
	r = authorizerToken(t, srv, ct, merchant, rt)
	wantCode(t, "rotating refresh", r, 0)
	rt2 := r.str("authorizer_refresh_token")
	if rt2 == rt || rt2 == "" {
		t.Fatalf("rotation answered refresh token %q (old %q)", rt2, rt)
	}
	wantCode(t, "the refresh token rotated away", authorizerToken(t, srv, ct, merchant, rt), 61023)
	srv.SetRefreshRotation(compApp, false)

	// api_get_authorizer_list recovers the current refresh token.
	r = compPost(t, srv, "/cgi-bin/component/api_get_authorizer_list", ct, map[string]any{"offset": 0, "count": 500})
	wantCode(t, "authorizer list", r, 0)
	list, _ := r["list"].([]any)
	if r.num("total_count") != 1 || len(list) != 1 {
		t.Fatalf("authorizer list = %v", r)
	}
	if item, _ := list[0].(map[string]any); item["authorizer_appid"] != merchant || item["refresh_token"] != rt2 {
		t.Fatalf("authorizer list item = %v; want refresh token %q", list[0], rt2)
	}
	wantCode(t, "authorizer list count 501", compPost(t, srv, "/cgi-bin/component/api_get_authorizer_list", ct, map[string]any{"offset": 0, "count": 501}), 40097)

	// Quota of the authorizer.
	srv.SetQuota(merchant, apiAuthorizerToken, srv.authorizerCalls(merchant))
	wantCode(t, "authorizer quota used up", authorizerToken(t, srv, ct, merchant, rt2), 45009)
	srv.SetQuota(merchant, apiAuthorizerToken, 1000)

	// IP allow-list of the component.
	srv.SetAllowedIPs(compApp, "10.9.9.9")
	wantCode(t, "authorizer token from outside the allow-list", authorizerToken(t, srv, ct, merchant, rt2), 61004)
	srv.SetAllowedIPs(compApp)

	// Revocation: unauthorized is pushed, the refresh token and the live
	// access token die.
	live := authorizerToken(t, srv, ct, merchant, rt2).str("authorizer_access_token")
	if err := srv.Revoke(t.Context(), compApp, merchant); err != nil {
		t.Fatal(err)
	}
	if evs := rc.of(msgcrypt.InfoUnauthorized); len(evs) != 1 || evs[0].AuthorizerAppID != merchant {
		t.Fatalf("unauthorized events = %+v", evs)
	}
	wantCode(t, "refresh after revocation", authorizerToken(t, srv, ct, merchant, rt2), 61023)
	if got := useToken(t, srv, live); got != 40001 {
		t.Fatalf("authorizer token after revocation: errcode %d; want 40001", got)
	}
	if _, ok := srv.RefreshToken(compApp, merchant); ok {
		t.Fatal("RefreshToken reports a revoked authorization as active")
	}
	if r := compPost(t, srv, "/cgi-bin/component/api_get_authorizer_list", ct, map[string]any{"offset": 0, "count": 10}); r.num("total_count") != 0 {
		t.Fatalf("authorizer list after revocation = %v", r)
	}
	if err := srv.Revoke(t.Context(), compApp, merchant); err == nil {
		t.Fatal("Revoke twice = nil error")
	}
	// Authorizing again after a revocation: authorized, a new refresh token.
	if _, err := srv.Authorize(t.Context(), compApp, merchant); err != nil {
		t.Fatal(err)
	}
	if rt3, ok := srv.RefreshToken(compApp, merchant); !ok || rt3 == rt2 {
		t.Fatalf("re-authorization kept refresh token %q", rt3)
	}
	if n := len(rc.of(msgcrypt.InfoAuthorized)); n != 2 {
		t.Fatalf("authorized events = %d; want 2", n)
	}
}

// authorizerCalls is how many api_authorizer_token calls counted against
// the authorizer's quota today.
func (s *Sim) authorizerCalls(appID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apps[appID].used[apiAuthorizerToken]
}

func TestPushFaultsAndReplays(t *testing.T) {
	srv, rc := newComponentTest(t, time.Hour, false)
	firstTicket(t, srv, rc)
	ctx := t.Context()

	srv.Fail(apiComponentEventPush, 1, Fault{Drop: true})
	ticket, err := srv.PushTicket(ctx, compApp)
	if err != nil || ticket == "" {
		t.Fatalf("PushTicket with a dropped push = %q, %v", ticket, err)
	}
	if failed, dropped := srv.PushFailures(compApp); failed != 0 || dropped != 1 {
		t.Fatalf("PushFailures = %d, %d; want 0, 1", failed, dropped)
	}
	if n := len(rc.of(msgcrypt.InfoVerifyTicket)); n != 1 {
		t.Fatalf("receiver got %d tickets; want the first only", n)
	}
	wantCode(t, "the missed push's ticket still works", componentToken(t, srv, ticket), 0)

	rc.mu.Lock()
	rc.answer = "fail"
	rc.mu.Unlock()
	if _, err := srv.PushTicket(ctx, compApp); err == nil || !strings.Contains(err.Error(), `"fail"`) {
		t.Fatalf("PushTicket to a URL answering fail = %v", err)
	}
	if failed, _ := srv.PushFailures(compApp); failed != 1 {
		t.Fatalf("PushFailures = %d; want 1", failed)
	}
	rc.mu.Lock()
	rc.answer = "success"
	rc.mu.Unlock()

	if err := srv.RepushLast(ctx, compApp); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	n := len(rc.raw)
	same := n >= 2 && rc.raw[n-1] == rc.raw[n-2]
	rc.mu.Unlock()
	if !same {
		t.Fatal("RepushLast did not resend the last push byte for byte")
	}

	cctx, cancel := context.WithCancel(ctx)
	srv.Fail(apiComponentEventPush, 1, Fault{Latency: time.Hour})
	cancel()
	if _, err := srv.PushTicket(cctx, compApp); err == nil {
		t.Fatal("PushTicket delayed past a cancelled context = nil error")
	}
}

func TestComponentControlEndpoints(t *testing.T) {
	srv, _ := newTest(t, Options{TicketPushInterval: time.Hour})
	rc := newReceiver(t)
	ctl := func(path string, body map[string]any) reply {
		t.Helper()
		return post(t, srv.URL, path, nil, body)
	}
	ctl("/sim/components", map[string]any{
		"component_appid": compApp, "component_secret": compSecret, "token": compToken,
		"encoding_aes_key": compKey, "event_url": rc.srv.URL,
	})
	r := ctl("/sim/components/push_ticket", map[string]any{"component_appid": compApp})
	if r.str("ticket") == "" || r.str("push_error") != "" {
		t.Fatalf("push_ticket = %v", r)
	}
	r = ctl("/sim/components/authorize", map[string]any{"component_appid": compApp, "authorizer_appid": merchant})
	if r.str("auth_code") == "" || r.str("push_error") != "" {
		t.Fatalf("authorize = %v", r)
	}
	st := get(t, srv.URL, "/sim/components/state", url.Values{"component_appid": {compApp}, "authorizer_appid": {merchant}})
	if st["authorized"] != true || st.str("refresh_token") == "" || st.str("verify_ticket") == "" {
		t.Fatalf("state = %v", st)
	}
	ctl("/sim/components/rotation", map[string]any{"component_appid": compApp, "on": true})
	r = ctl("/sim/components/revoke", map[string]any{"component_appid": compApp, "authorizer_appid": merchant})
	if r["ok"] != true || r.str("push_error") != "" {
		t.Fatalf("revoke = %v", r)
	}
	if st := get(t, srv.URL, "/sim/components/state", url.Values{"component_appid": {compApp}, "authorizer_appid": {merchant}}); st["authorized"] != false {
		t.Fatalf("state after revoke = %v", st)
	}
	if len(rc.of(msgcrypt.InfoUnauthorized)) != 1 {
		t.Fatal("no unauthorized push")
	}
	// Errors answer 400 with a message.
	for _, tc := range []struct {
		path string
		body string
	}{
		{"/sim/components", `{"component_appid":"wx1","component_secret":"s","token":"t","encoding_aes_key":"short"}`},
		{"/sim/components/push_ticket", `{"component_appid":"wxunknown"}`},
		{"/sim/components/revoke", `{"component_appid":"` + compApp + `","authorizer_appid":"` + merchant + `"}`},
		{"/sim/components/authorize", `{"component_appid":"` + compApp + `"}`},
	} {
		resp, err := http.Post(srv.URL+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"error"`) {
			t.Errorf("POST %s %s: %d %s; want 400 with an error", tc.path, tc.body, resp.StatusCode, b)
		}
	}
}

func TestAddComponentChecks(t *testing.T) {
	s := New(Options{})
	for _, c := range []Component{
		{AppID: compApp, Secret: compSecret, Token: compToken, EncodingAESKey: compKey[:42]},
		{AppID: compApp, Secret: compSecret, EncodingAESKey: compKey},
		{Secret: compSecret, Token: compToken, EncodingAESKey: compKey},
	} {
		if err := s.AddComponent(c); err == nil {
			t.Errorf("AddComponent(%+v) = nil error", c)
		}
	}
	if _, err := s.PushTicket(t.Context(), compApp); err == nil {
		t.Error("PushTicket(unregistered) = nil error")
	}
	if err := s.AddComponent(Component{AppID: compApp, Secret: compSecret, Token: compToken, EncodingAESKey: compKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authorize(t.Context(), compApp, ""); err == nil {
		t.Error("Authorize(empty authorizer) = nil error")
	}
	if err := s.RepushLast(t.Context(), compApp); err == nil {
		t.Error("RepushLast before any push = nil error")
	}
}
