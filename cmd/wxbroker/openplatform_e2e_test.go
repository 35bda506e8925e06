package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	e2eComponent = "wx5000000000000001"
	e2eMerchant  = "wx5100000000000001" // authorizes through a push, later revoked without one
	e2eImported  = "wx5100000000000002" // its refresh token is imported
	e2eTTL       = 8 * time.Second      // every token's lifetime at the simulator
)

// e2eReplica is one in-process `serve` (runSystem) of the two-replica test.
type e2eReplica struct {
	name             string
	internal, public string          // base URLs
	logs             *logtest.Buffer // its log (debug) and audit log
}

// e2eConfig is a replica's configuration: one app (so that it becomes
// ready) in namespace prod, the component in namespace open, refresh at
// half the lifetime, a shared Redis prefix.
func e2eConfig(t *testing.T, name, redisAddr, wechatURL string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.InstanceID = name
	cfg.Listen = "127.0.0.1:8080"
	cfg.PublicListen = "127.0.0.1:8081"
	cfg.Redis.Addrs = []string{redisAddr}
	cfg.Redis.KeyPrefix = "e2e"
	cfg.WeChat = config.WeChat{BaseURL: wechatURL, Timeout: 2 * time.Second}
	cfg.Refresh.BeforeExpiry = config.Portion{Fraction: 0.5}
	cfg.Namespaces = map[string]*config.Namespace{
		"prod": {Apps: []*config.App{{AppID: pubApp, Secret: "s3cr3t-value", Kind: "miniprogram", TokenMode: "stable"}}},
		"open": {Apps: []*config.App{}, Components: []*config.Component{{
			AppID: e2eComponent, Secret: "cs", Token: pubMsgToken, EncodingAESKey: pubAESKey,
		}}},
	}
	cfg.OpenPlatform.RefreshTokenEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString([]byte("e2e-refresh-token-key-of-32bytes")))
	cfg.Clients = []config.Client{{Name: "sre", KeySHA256: config.HashKey(pubAdminKey), Allow: []string{"*/*", "*/*/*"}, Admin: true}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.Listen, cfg.PublicListen = "127.0.0.1:0", "127.0.0.1:0"
	return cfg
}

// runE2EReplica runs runSystem with the real engine until the test ends.
func runE2EReplica(t *testing.T, name, redisAddr, wechatURL string) *e2eReplica {
	t.Helper()
	cfg := e2eConfig(t, name, redisAddr, wechatURL)
	logs := &logtest.Buffer{}
	log, err := newLogger(config.Log{Level: "debug", Format: "json"}, zapcore.AddSync(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- runSystem(ctx, system{
			Config: cfg, Redis: newRedis(cfg.Redis), Logger: log, AuditWriter: logs,
			OnReady: func(i, p net.Addr) { ready <- [2]net.Addr{i, p} },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: runSystem: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: runSystem did not return 30 s after its context ended", name)
		}
	})
	select {
	case a := <-ready:
		if a[1] == nil {
			t.Fatalf("%s: no public listener", name)
		}
		return &e2eReplica{name: name, internal: "http://" + a[0].String(), public: "http://" + a[1].String(), logs: logs}
	case err := <-done:
		t.Fatalf("%s: runSystem ended before it was ready: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not ready within 30 s", name)
	}
	return nil
}

func (r *e2eReplica) comp(path string) string {
	return r.internal + "/v1/namespaces/open/components/" + e2eComponent + path
}

// tokenAnswer is a token read's JSON.
type tokenAnswer struct {
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	Generation  int64     `json:"generation"`
}

// token reads a component (authorizer "") or authorizer token from r.
func (r *e2eReplica) token(authorizer string) (tokenAnswer, int, []byte) {
	path := "/access_token"
	if authorizer != "" {
		path = "/authorizers/" + authorizer + "/access_token"
	}
	var tok tokenAnswer
	code, body, err := httpGet(r.comp(path), "", pubAdminKey)
	if err != nil {
		return tok, 0, []byte(err.Error())
	}
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &tok); err != nil {
			return tok, 0, body
		}
	}
	return tok, code, body
}

// state returns authorizer a's state in r's list ("" when not listed).
func (r *e2eReplica) state(t *testing.T, a string) (state, source string) {
	t.Helper()
	code, body, err := httpGet(r.comp("/authorizers"), "", pubAdminKey)
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: GET authorizers: %d %s %v", r.name, code, body, err)
	}
	var list struct {
		Authorizers []struct {
			AppID  string `json:"authorizer_appid"`
			State  string `json:"state"`
			Source string `json:"source"`
		} `json:"authorizers"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Authorizers {
		if e.AppID == a {
			return e.State, e.Source
		}
	}
	return "", ""
}

// gateway calls /cgi-bin/menu/get through r as authorizer a.
func (r *e2eReplica) gateway(t *testing.T, a string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.internal+"/cgi-bin/menu/get", nil)
	req.Header.Set("Authorization", "Bearer "+pubAdminKey)
	req.Header.Set("X-Wxbroker-App", "open/"+e2eComponent+"/"+a)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s: gateway call as %s: %v", r.name, a, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strconv.Itoa(resp.StatusCode) + " " + string(b)
}

// gauge returns the value of the /metrics series whose line starts with
// name and contains every label (-1: no such series).
func (r *e2eReplica) gauge(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	code, body, err := httpGet(r.internal+"/metrics", "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: /metrics: %d %v", r.name, code, err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		all := true
		for _, l := range labels {
			all = all && strings.Contains(m[1], l)
		}
		if all {
			v, _ := strconv.ParseFloat(m[2], 64)
			return v
		}
	}
	return -1
}

// TestOpenPlatformTwoReplicas drives the real engine of two replicas
// sharing one Redis from the outside (the simulator's pushes, the API, the
// gateway, /metrics): an encrypted ticket push to one replica is decrypted
// and stored, and the leader mints the component token with it; an
// authorized push becomes an authorizer whose token both replicas serve
// (API and gateway) and which is refreshed before it expires; an imported
// refresh token works; a refresh token WeChat retired without a push
// (61023) makes the authorizer needs_reauthorization, its refreshes stop,
// and the gauge says so on both replicas.
func TestOpenPlatformTwoReplicas(t *testing.T) {
	sim := wechattest.NewServer(wechattest.Options{TokenTTL: e2eTTL, Overlap: 2 * time.Second, TicketPushInterval: time.Hour})
	t.Cleanup(sim.Close)
	sim.AddApp(pubApp, "s3cr3t-value")
	rs := redistest.Start(t)
	a := runE2EReplica(t, "replica-a", rs.Addr, sim.URL)
	b := runE2EReplica(t, "replica-b", rs.Addr, sim.URL)
	both := []*e2eReplica{a, b}
	ctx := context.Background()

	// 1. The ticket: pushed (encrypted) to a's event URL when the component
	// is registered; b learns it from Redis, the leader mints with it.
	if err := sim.AddComponent(wechattest.Component{AppID: e2eComponent, Secret: "cs", Token: pubMsgToken,
		EncodingAESKey: pubAESKey, EventURL: a.public + "/open/" + e2eComponent + "/events", RotateRefreshTokens: true}); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, "the component token on both replicas", 15*time.Second, func() bool {
		for _, r := range both {
			if tok, code, _ := r.token(""); code != http.StatusOK || !sim.TokenValid(e2eComponent, tok.AccessToken) {
				return false
			}
		}
		return true
	})
	if got := a.gauge(t, "wxbroker_open_platform_events_total", `component_appid="`+e2eComponent+`"`,
		`info_type="component_verify_ticket"`, `result="accepted"`); got < 1 {
		t.Errorf("replica a accepted %v ticket pushes; want at least 1", got)
	}
	for _, r := range both {
		if got := r.gauge(t, "wxbroker_open_platform_verify_ticket_timestamp_seconds", `component_appid="`+e2eComponent+`"`); got <= 0 {
			t.Errorf("%s: verify ticket timestamp %v; want the pushed ticket's (stored in Redis, read by every replica)", r.name, got)
		}
	}

	// 2. An authorization pushed to a: both replicas serve its token, through
	// the API and the gateway.
	if _, err := sim.Authorize(ctx, e2eComponent, e2eMerchant); err != nil {
		t.Fatalf("authorized push: %v", err)
	}
	var first tokenAnswer
	waittest.For(t, "the authorizer's token on both replicas", 15*time.Second, func() bool {
		for _, r := range both {
			tok, code, _ := r.token(e2eMerchant)
			if code != http.StatusOK || !sim.TokenValid(e2eMerchant, tok.AccessToken) {
				return false
			}
			first = tok
		}
		return true
	})
	for _, r := range both {
		if st, src := r.state(t, e2eMerchant); st != "active" || src != "event" {
			t.Errorf("%s: %s is %q from %q; want active from event", r.name, e2eMerchant, st, src)
		}
		if got := r.gateway(t, e2eMerchant); !strings.HasPrefix(got, "200 ") || !strings.Contains(got, `"menu"`) {
			t.Errorf("%s: gateway call as the authorizer = %s; want 200 with the menu", r.name, got)
		}
	}

	// 3. Refreshed ahead of expiry: a newer generation on both replicas
	// before the token read first expires.
	waittest.For(t, "a refreshed authorizer token on both replicas", e2eTTL, func() bool {
		for _, r := range both {
			if tok, code, _ := r.token(e2eMerchant); code != http.StatusOK || tok.Generation <= first.Generation {
				return false
			}
		}
		return true
	})
	if now := time.Now(); !now.Before(first.ExpiresAt) {
		t.Errorf("the authorizer token was replaced at %s, not before it expired at %s", now.Format(time.RFC3339Nano), first.ExpiresAt.Format(time.RFC3339Nano))
	}

	// 4. An import: a merchant authorized while the push was lost; its
	// refresh token (as an SDK's cache holds it) is imported on b.
	sim.Fail("component_push", 1, wechattest.Fault{Drop: true})
	if _, err := sim.Authorize(ctx, e2eComponent, e2eImported); err != nil {
		t.Fatal(err)
	}
	rt, ok := sim.RefreshToken(e2eComponent, e2eImported)
	if !ok || rt == "" {
		t.Fatal("the simulator has no refresh token for the second merchant")
	}
	body, _ := json.Marshal([]map[string]string{{"authorizer_appid": e2eImported, "authorizer_refresh_token": rt}})
	req, _ := http.NewRequest(http.MethodPost, b.comp("/authorizers"), strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+pubAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	imp, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(imp), `"imported":1`) {
		t.Fatalf("import = %d %s; want 200 with imported 1", resp.StatusCode, imp)
	}
	var imported tokenAnswer
	waittest.For(t, "the imported authorizer's token on both replicas", 15*time.Second, func() bool {
		for _, r := range both {
			tok, code, _ := r.token(e2eImported)
			if code != http.StatusOK || !sim.TokenValid(e2eImported, tok.AccessToken) {
				return false
			}
			imported = tok
		}
		return true
	})
	if st, src := a.state(t, e2eImported); st != "active" || src != "import" {
		t.Errorf("%s is %q from %q; want active from import", e2eImported, st, src)
	}

	// 5. WeChat retires the first merchant's refresh token without a push
	// (the merchant revoked, the unauthorized push was lost): the next
	// refresh is answered 61023, api_get_authorizer_list no longer lists
	// it, and it needs re-authorization, on both replicas.
	refused := sim.Answered(61023)
	sim.Fail("component_push", 1, wechattest.Fault{Drop: true})
	if err := sim.Revoke(ctx, e2eComponent, e2eMerchant); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, "needs_reauthorization on both replicas", 3*e2eTTL, func() bool {
		for _, r := range both {
			if st, _ := r.state(t, e2eMerchant); st != "needs_reauthorization" {
				return false
			}
		}
		return true
	})
	if sim.Answered(61023) <= refused {
		t.Error("no refresh was answered 61023")
	}
	calls := sim.Calls("api_authorizer_token", e2eMerchant)
	imported, _, _ = a.token(e2eImported)
	for _, r := range both {
		waittest.For(t, r.name+": the gauge of authorizers needing re-authorization at 1", 5*time.Second, func() bool {
			return r.gauge(t, "wxbroker_open_platform_authorizers", `component_appid="`+e2eComponent+`"`, `state="needs_reauthorization"`) == 1
		})
		if _, code, body := r.token(e2eMerchant); code != http.StatusConflict || !strings.Contains(string(body), "needs_reauthorization") {
			t.Errorf("%s: token of a merchant needing re-authorization = %d %s; want 409 needs_reauthorization", r.name, code, body)
		}
		if got := r.gateway(t, e2eMerchant); !strings.Contains(got, "61023") {
			t.Errorf("%s: gateway call as a merchant needing re-authorization = %s; want errcode 61023", r.name, got)
		}
	}
	// Its retries stop: while the imported authorizer is refreshed once
	// more (a refresh period), the simulator gets no call for it.
	waittest.For(t, "another refresh of the imported authorizer", 2*e2eTTL, func() bool {
		tok, code, _ := a.token(e2eImported)
		return code == http.StatusOK && tok.Generation > imported.Generation
	})
	if now := sim.Calls("api_authorizer_token", e2eMerchant); now != calls {
		t.Errorf("%d api_authorizer_token calls for %s after it was marked needs_reauthorization; want none", now-calls, e2eMerchant)
	}
	if st, _ := b.state(t, e2eImported); st != "active" {
		t.Errorf("the imported authorizer is %q; want active", st)
	}

	// No refresh token, ticket or authorizer token in any log line (debug
	// level and the audit log): they appear masked, if at all.
	secrets := map[string]string{"verify ticket": sim.VerifyTicket(e2eComponent)}
	for _, az := range []string{e2eMerchant, e2eImported} {
		if rt, ok := sim.RefreshToken(e2eComponent, az); ok {
			secrets["refresh token of "+az] = rt
		}
	}
	if tok, code, _ := a.token(e2eImported); code == http.StatusOK {
		secrets["authorizer token of "+e2eImported] = tok.AccessToken
	}
	for _, r := range both {
		out := r.logs.String()
		if !strings.Contains(out, e2eImported) {
			t.Errorf("%s: the log never names %s: the leak check reads nothing", r.name, e2eImported)
		}
		for what, v := range secrets {
			if v == "" {
				t.Errorf("%s is empty: the leak check checks nothing", what)
			} else if strings.Contains(out, v) {
				t.Errorf("%s: the %s is in the log in clear", r.name, what)
			}
		}
	}
}
