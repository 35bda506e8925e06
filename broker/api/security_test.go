package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestAppWildcardPattern: "*/appid" lets a client read that appid in any
// namespace, and no other app.
func TestAppWildcardPattern(t *testing.T) {
	const keyB = "any-ns-b-key-0123456789"
	cfg := testConfig()
	cfg.Clients = append(cfg.Clients, config.Client{Name: "b-reader", KeySHA256: config.HashKey(keyB), Allow: []string{"*/" + appB}})
	a, err := New(Options{
		Tokens: newFake(), Config: cfg, Logger: zap.NewNop(), AuditWriter: io.Discard,
		Metrics: metrics.New(prometheus.NewRegistry()), Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	h := &harness{api: a}
	tests := []struct {
		name string
		path string
		want int
	}{
		{"matching app", tokenPath("prod", appB), 200},
		{"matching app not configured in namespace", tokenPath("staging", appB), 404}, // allowed pattern, app not configured there
		{"other app", tokenPath("prod", appA), 403},
		{"other app other namespace", tokenPath("staging", appC), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := h.do(t, "GET", tt.path, keyB, nil); r.status != tt.want {
				t.Errorf("GET %s = %d %s; want %d", tt.path, r.status, r.body, tt.want)
			}
		})
	}
}

// TestBodyLimitWithoutContentLength: the limit holds for a chunked body
// (no declared length) and for a declared oversize body a route never reads.
func TestBodyLimitWithoutContentLength(t *testing.T) {
	h := newHarness(t)
	body := `{"access_token":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	req := httptest.NewRequest("POST", tokenPath("prod", appA)+"/invalidate", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+keyOrder)
	rec := httptest.NewRecorder()
	h.api.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversize body = %d %s; want 413", rec.Code, rec.Body)
	}
	if len(h.fake.invalidated) != 0 {
		t.Errorf("an oversize request reached the broker: %d invalidations", len(h.fake.invalidated))
	}
	r := h.do(t, "GET", tokenPath("prod", appA), keyOrder, strings.NewReader(strings.Repeat("x", MaxBodyBytes+1)))
	if r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("declared oversize body on a read = %d; want 413", r.status)
	}
}

// TestGetTicketRefusesExpiredAndSupersededTokens runs a real broker on a
// test clock: /cgi-bin/ticket/getticket takes an access token as its
// credential only while the broker would itself serve it: the current token
// until it expires, the previous one only within WeChat's 300 s overlap.
func TestGetTicketRefusesExpiredAndSupersededTokens(t *testing.T) {
	clock := clocktest.New(time.Now().Truncate(time.Second))
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{Now: clock.Now})
	t.Cleanup(sim.Close)
	for appid, secret := range map[string]string{appA: "sa", appB: "sb", appC: "sc"} {
		sim.AddApp(appid, secret)
	}
	cfg := testConfig()
	cfg.Redis.Addrs = []string{rs.Addr}
	cfg.Redis.KeyPrefix = fmt.Sprintf("apisec%d", time.Now().UnixNano()%1e9)
	cfg.WeChat.BaseURL = sim.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.WeChat.Timeout = time.Second
	cfg.Refresh.ForceMinInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	b := brokertest.Run(t, broker.Options{Config: cfg, Redis: rs.Client(t), WeChat: mustWeChat(t, sim.URL),
		Logger: zap.NewNop(), Metrics: m, Now: clock.Now})
	a, err := New(Options{Tokens: b, Config: cfg, Logger: zap.NewNop(), Metrics: m, AuditWriter: io.Discard, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	errcode := func(tok string) int {
		t.Helper()
		resp, err := http.Get(srv.URL + "/cgi-bin/ticket/getticket?type=jsapi&access_token=" + tok)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Errcode int `json:"errcode"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v.Errcode
	}
	first := brokertest.WaitToken(t, b, "prod", appA, 20*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for errcode(first.AccessToken) != 0 { // the jsapi ticket follows the token
		if time.Now().After(deadline) {
			t.Fatal("no jsapi ticket served for the current token")
		}
		time.Sleep(20 * time.Millisecond)
	}

	clock.Advance(2 * time.Second) // past force_min_interval
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second, err := b.Invalidate(ctx, "prod", appA, first.AccessToken, metrics.SourceClient)
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("Invalidate = %v; want a new token", err)
	}
	if c := errcode(first.AccessToken); c != 0 {
		t.Fatalf("superseded token within the overlap: errcode %d; want 0", c)
	}
	clock.Advance(301 * time.Second)
	if c := errcode(first.AccessToken); c != 40001 {
		t.Errorf("superseded token after the 300 s overlap: errcode %d; want 40001", c)
	}
	if c := errcode(second.AccessToken); c != 0 {
		t.Fatalf("current token: errcode %d; want 0", c)
	}

	// WeChat stops answering token calls; the current token runs out.
	sim.Fail(wechat.APIStableToken, 1000, wechattest.Fault{Errcode: -1})
	sim.Fail(wechat.APIToken, 1000, wechattest.Fault{Errcode: -1})
	clock.Set(second.ExpiresAt.Add(time.Second))
	if tok, err := b.AccessToken("prod", appA); err == nil && tok.AccessToken != second.AccessToken {
		t.Fatal("the broker fetched a new token although WeChat refuses; the test proves nothing")
	}
	if c := errcode(second.AccessToken); c != 40001 {
		t.Errorf("expired token: errcode %d; want 40001", c)
	}
}
