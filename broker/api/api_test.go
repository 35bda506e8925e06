package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

const (
	appA = "wx00000000000000a1" // prod, stable, jsapi ticket
	appB = "wx00000000000000b2" // prod
	appC = "wx00000000000000c3" // staging

	keyOrder = "order-key-0123456789"
	keyStg   = "staging-key-0123456789"
	keySRE   = "sre-key-0123456789"
	keyMulti = "multi-key-0123456789"

	tokenA  = "TOKEN-A-secret-value"
	tokenC  = "TOKEN-C-secret-value"
	ticketA = "TICKET-A-secret-value"
)

var testNow = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func testConfig() *config.Config {
	c := config.Default()
	c.Namespaces = map[string]*config.Namespace{
		"prod": {Apps: []*config.App{
			{AppID: appA, Secret: "sa", Kind: config.KindOfficialAccount, Tickets: []string{"jsapi"}},
			{AppID: appB, Secret: "sb", Kind: config.KindMiniProgram},
		}},
		"staging": {Apps: []*config.App{{AppID: appC, Secret: "sc", Kind: config.KindMiniProgram}}},
	}
	c.Clients = []config.Client{
		{Name: "order-service", KeySHA256: config.HashKey(keyOrder), Allow: []string{"prod/" + appA}},
		{Name: "staging-service", KeySHA256: config.HashKey(keyStg), Allow: []string{"staging/*"}},
		{Name: "multi", KeySHA256: config.HashKey(keyMulti), Allow: []string{"prod/" + appA, "staging/*"}},
		{Name: "sre", KeySHA256: strings.ToUpper(config.HashKey(keySRE)), Allow: []string{"*/*"}, Admin: true},
	}
	c.ApplyDefaults()
	return c
}

// fakeTokens is a TokenSource with fixed answers.
type fakeTokens struct {
	mu          sync.Mutex
	tokens      map[appKey]broker.Token
	tickets     map[appKey]broker.Ticket // "jsapi" only
	err         error                    // returned by every read when set
	invalidErr  error
	ready       error
	invalidated []string
}

func newFake() *fakeTokens {
	return &fakeTokens{
		tokens: map[appKey]broker.Token{
			{"prod", appA}:    {AccessToken: tokenA, ExpiresAt: testNow.Add(7200 * time.Second), Generation: 3},
			{"prod", appB}:    {AccessToken: "TOKEN-B", ExpiresAt: testNow.Add(100*time.Second + 700*time.Millisecond), Generation: 1},
			{"staging", appC}: {AccessToken: tokenC, ExpiresAt: testNow.Add(60 * time.Second), Generation: 9},
		},
		tickets: map[appKey]broker.Ticket{
			{"prod", appA}: {Ticket: ticketA, ExpiresAt: testNow.Add(3600 * time.Second)},
		},
	}
}

func (f *fakeTokens) AccessToken(ns, appid string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return broker.Token{}, f.err
	}
	t, ok := f.tokens[appKey{ns, appid}]
	if !ok {
		return broker.Token{}, broker.ErrUnknownApp
	}
	return t, nil
}

func (f *fakeTokens) Ticket(ns, appid, typ string) (broker.Ticket, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return broker.Ticket{}, f.err
	}
	if _, ok := f.tokens[appKey{ns, appid}]; !ok {
		return broker.Ticket{}, broker.ErrUnknownApp
	}
	t, ok := f.tickets[appKey{ns, appid}]
	if !ok || typ != "jsapi" {
		return broker.Ticket{}, broker.ErrUnknownTicket
	}
	return t, nil
}

func (f *fakeTokens) Invalidate(ctx context.Context, ns, appid, failed, source string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.invalidErr != nil {
		return broker.Token{}, f.invalidErr
	}
	t, ok := f.tokens[appKey{ns, appid}]
	if !ok {
		return broker.Token{}, broker.ErrUnknownApp
	}
	f.invalidated = append(f.invalidated, ns+"/"+appid+" "+failed+" "+source)
	if failed == t.AccessToken {
		t.AccessToken += "-next"
		t.Generation++
		f.tokens[appKey{ns, appid}] = t
	}
	return t, nil
}

// ReportFailure records the report, marked "unproven" or "confirm" by its
// Proof, and then behaves as Invalidate (the fake has no WeChat to check
// with). A report of the current token is one that would cost WeChat a
// call: it is charged first, and a refused charge is returned wrapped.
func (f *fakeTokens) ReportFailure(ctx context.Context, ns, appid string, r broker.Report) (broker.Token, error) {
	source := r.Source
	switch r.Proof {
	case broker.Unproven:
		source += " unproven"
	case broker.MustConfirm:
		source += " confirm"
	}
	if r.Charge != nil {
		f.mu.Lock()
		t, ok := f.tokens[appKey{ns, appid}]
		f.mu.Unlock()
		if ok && t.AccessToken == r.Token {
			if err := r.Charge(); err != nil {
				return broker.Token{}, fmt.Errorf("report refused: %w", err)
			}
		}
	}
	return f.Invalidate(ctx, ns, appid, r.Token, source)
}

func (f *fakeTokens) AppByToken(token string) (string, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, t := range f.tokens {
		if t.AccessToken == token {
			return k.ns, k.appid, true
		}
	}
	return "", "", false
}

func (f *fakeTokens) Status(context.Context) broker.Status { return broker.Status{} }

func (f *fakeTokens) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

type harness struct {
	api   *API
	fake  *fakeTokens
	reg   *prometheus.Registry
	m     *metrics.Metrics
	audit *observer.ObservedLogs
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	core, logs := observer.New(zapcore.InfoLevel)
	fake := newFake()
	a, err := New(Options{
		Tokens:      fake,
		Config:      testConfig(),
		Logger:      zap.NewNop(),
		AuditLogger: zap.New(core),
		Metrics:     m,
		Gatherer:    reg,
		Now:         func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return &harness{api: a, fake: fake, reg: reg, m: m, audit: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) do(t *testing.T, method, target, key string, body io.Reader, hdr ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.api.Handler().ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	if b.Error.Message == "" {
		t.Errorf("error body %s has no message", r.body)
	}
	return b.Error.Code
}

func tokenPath(ns, appid string) string {
	return "/v1/namespaces/" + ns + "/apps/" + appid + "/access_token"
}

func TestAuthMatrix(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		key        string
		body       string
		wantStatus int
		wantCode   string // error code; "" for success
	}{
		{"no key", "GET", tokenPath("prod", appA), "", "", 401, "unauthorized"},
		{"unknown key", "GET", tokenPath("prod", appA), "nope", "", 401, "unauthorized"},
		{"allowed exact", "GET", tokenPath("prod", appA), keyOrder, "", 200, ""},
		{"other app same namespace", "GET", tokenPath("prod", appB), keyOrder, "", 403, "forbidden"},
		{"wrong namespace", "GET", tokenPath("staging", appC), keyOrder, "", 403, "forbidden"},
		{"namespace wildcard", "GET", tokenPath("staging", appC), keyStg, "", 200, ""},
		{"namespace wildcard, other namespace", "GET", tokenPath("prod", appA), keyStg, "", 403, "forbidden"},
		{"app in wrong namespace", "GET", tokenPath("staging", appA), keySRE, "", 404, "not_found"},
		{"unknown app, allowed pattern", "GET", tokenPath("staging", "wx0000000000000fff"), keyStg, "", 404, "not_found"},
		{"unknown app, not allowed", "GET", tokenPath("prod", "wx0000000000000fff"), keyOrder, "", 403, "forbidden"},
		{"unknown namespace", "GET", tokenPath("nope", appA), keySRE, "", 404, "not_found"},
		{"admin any", "GET", tokenPath("prod", appB), keySRE, "", 200, ""},
		{"ticket", "GET", "/v1/namespaces/prod/apps/" + appA + "/tickets/jsapi", keyOrder, "", 200, ""},
		{"ticket not configured", "GET", "/v1/namespaces/prod/apps/" + appA + "/tickets/wx_card", keyOrder, "", 404, "not_found"},
		{"ticket forbidden", "GET", "/v1/namespaces/prod/apps/" + appB + "/tickets/jsapi", keyOrder, "", 403, "forbidden"},
		{"status non-admin", "GET", "/v1/status", keyOrder, "", 403, "forbidden"},
		{"status no key", "GET", "/v1/status", "", "", 401, "unauthorized"},
		{"status admin", "GET", "/v1/status", keySRE, "", 200, ""},
		{"invalidate bad JSON", "POST", tokenPath("prod", appA) + "/invalidate", keyOrder, "{nope", 400, "bad_request"},
		{"invalidate empty body", "POST", tokenPath("prod", appA) + "/invalidate", keyOrder, "", 400, "bad_request"},
		{"invalidate no token", "POST", tokenPath("prod", appA) + "/invalidate", keyOrder, `{}`, 400, "bad_request"},
		{"invalidate trailing data", "POST", tokenPath("prod", appA) + "/invalidate", keyOrder, `{"access_token":"x"} {}`, 400, "bad_request"},
		{"invalidate oversize", "POST", tokenPath("prod", appA) + "/invalidate", keyOrder,
			`{"access_token":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413, "payload_too_large"},
		{"invalidate forbidden before body", "POST", tokenPath("prod", appB) + "/invalidate", keyOrder, "{nope", 403, "forbidden"},
		{"invalidate no key", "POST", tokenPath("prod", appA) + "/invalidate", "", `{"access_token":"x"}`, 401, "unauthorized"},
		{"signature bad url", "POST", "/v1/namespaces/prod/apps/" + appA + "/jssdk/signature", keyOrder, `{"url":"/relative"}`, 400, "bad_request"},
		{"signature no ticket", "POST", "/v1/namespaces/staging/apps/" + appC + "/jssdk/signature", keyStg, `{"url":"https://x.example/"}`, 404, "not_found"},
		{"unknown route", "GET", "/v1/nope", keySRE, "", 404, "not_found"},
		{"wrong method", "DELETE", tokenPath("prod", appA), keyOrder, "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			r := h.do(t, tt.method, tt.path, tt.key, body)
			if r.status != tt.wantStatus {
				t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, r.status, r.body, tt.wantStatus)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			if tt.wantCode == "" {
				return
			}
			if got := r.errorCode(t); got != tt.wantCode {
				t.Errorf("error code = %q; want %q (body %s)", got, tt.wantCode, r.body)
			}
			if tt.wantStatus == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestBrokerErrors(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
		wantCode   string
	}{
		{broker.ErrNoToken, 503, "unavailable"},
		{broker.ErrUnknownApp, 404, "not_found"},
		{broker.ErrForceLimited, 429, "too_many_requests"},
		{context.DeadlineExceeded, 503, "unavailable"},
		{errors.New("redis: connection refused at 10.0.0.7:6379"), 500, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.wantCode, func(t *testing.T) {
			h := newHarness(t)
			h.fake.err = tt.err
			h.fake.invalidErr = tt.err
			r := h.do(t, "POST", tokenPath("prod", appA)+"/invalidate", keyOrder, strings.NewReader(`{"access_token":"x"}`))
			if r.status != tt.wantStatus || r.errorCode(t) != tt.wantCode {
				t.Fatalf("invalidate with %v = %d %s; want %d %s", tt.err, r.status, r.body, tt.wantStatus, tt.wantCode)
			}
			if bytes.Contains(r.body, []byte("10.0.0.7")) || bytes.Contains(r.body, []byte("broker:")) {
				t.Errorf("error body leaks internals: %s", r.body)
			}
			r = h.do(t, "GET", tokenPath("prod", appA), keyOrder, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("read with %v = %d %s; want %d", tt.err, r.status, r.body, tt.wantStatus)
			}
		})
	}
}

func TestTokenShapes(t *testing.T) {
	h := newHarness(t)

	r := h.do(t, "GET", tokenPath("prod", appB), keySRE, nil)
	want := `{"access_token":"TOKEN-B","expires_in":100,"expires_at":"2025-01-01T00:01:40Z","generation":1}`
	if string(r.body) != want {
		t.Errorf("token body = %s; want %s", r.body, want)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q; want no-store", cc)
	}

	r = h.do(t, "GET", "/v1/namespaces/prod/apps/"+appA+"/tickets/jsapi", keyOrder, nil)
	want = `{"ticket":"` + ticketA + `","expires_in":3600,"expires_at":"2025-01-01T01:00:00Z"}`
	if string(r.body) != want {
		t.Errorf("ticket body = %s; want %s", r.body, want)
	}

	r = h.do(t, "POST", tokenPath("prod", appA)+"/invalidate", keyOrder, strings.NewReader(`{"access_token":"`+tokenA+`"}`))
	want = `{"access_token":"` + tokenA + `-next","expires_in":7200,"expires_at":"2025-01-01T02:00:00Z","generation":4}`
	if r.status != 200 || string(r.body) != want {
		t.Errorf("invalidate = %d %s; want 200 %s", r.status, r.body, want)
	}
	if got, want := h.fake.invalidated, []string{"prod/" + appA + " " + tokenA + " client unproven"}; !equal(got, want) {
		t.Errorf("Invalidate calls = %q; want %q", got, want)
	}

	r = h.do(t, "POST", "/v1/namespaces/prod/apps/"+appA+"/jssdk/signature", keyOrder,
		strings.NewReader(`{"url":"https://shop.example/pay?id=1#frag"}`))
	var sig struct {
		AppID     string `json:"appId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(r.body, &sig); err != nil || r.status != 200 {
		t.Fatalf("signature = %d %s (%v)", r.status, r.body, err)
	}
	if sig.AppID != appA || sig.Timestamp != testNow.Unix() || len(sig.NonceStr) != 16 {
		t.Errorf("signature answer = %+v", sig)
	}
	if w := wechat.JSAPISignature(ticketA, sig.NonceStr, sig.Timestamp, "https://shop.example/pay?id=1"); sig.Signature != w {
		t.Errorf("signature = %s; want %s", sig.Signature, w)
	}
	r2 := h.do(t, "POST", "/v1/namespaces/prod/apps/"+appA+"/jssdk/signature", keyOrder,
		strings.NewReader(`{"url":"https://shop.example/"}`))
	if bytes.Contains(r2.body, []byte(sig.NonceStr)) {
		t.Error("two signatures share a nonce")
	}

	r = h.do(t, "GET", "/v1/status", keySRE, nil)
	if r.status != 200 || !json.Valid(r.body) || r.body[0] != '{' {
		t.Errorf("status = %d %s; want a JSON object", r.status, r.body)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWeChatCompatibleToken(t *testing.T) {
	q := func(grant, appid, secret string) string {
		v := url.Values{}
		if grant != "" {
			v.Set("grant_type", grant)
		}
		if appid != "" {
			v.Set("appid", appid)
		}
		if secret != "" {
			v.Set("secret", secret)
		}
		return "/cgi-bin/token?" + v.Encode()
	}
	tests := []struct {
		name    string
		target  string
		ns      string
		wantErr int    // errcode; 0: success
		wantTok string // on success
	}{
		{"only namespace of client", q("client_credential", appA, keyOrder), "", 0, tokenA},
		{"namespace from app", q("client_credential", appC, keySRE), "", 0, tokenC},
		{"namespace header", q("client_credential", appC, keySRE), "staging", 0, tokenC},
		{"multi-namespace client, app decides", q("client_credential", appC, keyMulti), "", 0, tokenC},
		{"wrong namespace header", q("client_credential", appA, keySRE), "staging", 40013, ""},
		{"bad grant_type", q("password", appA, keyOrder), "", 40002, ""},
		{"no appid", q("client_credential", "", keyOrder), "", 41002, ""},
		{"no secret", q("client_credential", appA, ""), "", 41004, ""},
		{"bad key", q("client_credential", appA, "wrong"), "", 40125, ""},
		{"not allowed", q("client_credential", appB, keyOrder), "", 48001, ""},
		{"unknown appid", q("client_credential", "wx0000000000000fff", keySRE), "", 40013, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var hdr []string
			if tt.ns != "" {
				hdr = []string{"X-Wxbroker-Namespace", tt.ns}
			}
			r := h.do(t, "GET", tt.target, "", nil, hdr...)
			if r.status != 200 {
				t.Fatalf("status = %d; WeChat answers errors with 200", r.status)
			}
			var b struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   *int   `json:"expires_in"`
				Errcode     int    `json:"errcode"`
				Errmsg      string `json:"errmsg"`
			}
			if err := json.Unmarshal(r.body, &b); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			if b.Errcode != tt.wantErr {
				t.Fatalf("errcode = %d (%s); want %d", b.Errcode, r.body, tt.wantErr)
			}
			if tt.wantErr != 0 {
				if b.Errmsg == "" || b.AccessToken != "" {
					t.Errorf("error answer = %s", r.body)
				}
				return
			}
			if b.AccessToken != tt.wantTok || b.ExpiresIn == nil || *b.ExpiresIn <= 0 {
				t.Errorf("answer = %s; want token %s with expires_in", r.body, tt.wantTok)
			}
		})
	}
}

func TestWeChatCompatibleTicket(t *testing.T) {
	h := newHarness(t)
	r := h.do(t, "GET", "/cgi-bin/ticket/getticket?type=jsapi&access_token="+tokenA, "", nil)
	want := `{"errcode":0,"errmsg":"ok","ticket":"` + ticketA + `","expires_in":3600}`
	if string(r.body) != want {
		t.Errorf("getticket = %s; want %s", r.body, want)
	}
	for name, target := range map[string]string{
		"unknown token": "/cgi-bin/ticket/getticket?type=jsapi&access_token=forged",
		"no token":      "/cgi-bin/ticket/getticket?type=jsapi",
	} {
		r = h.do(t, "GET", target, "", nil)
		if !strings.HasPrefix(string(r.body), `{"errcode":40001,`) {
			t.Errorf("%s: getticket = %s; want errcode 40001", name, r.body)
		}
	}
	r = h.do(t, "GET", "/cgi-bin/ticket/getticket?type=wx_card&access_token="+tokenA, "", nil)
	if !strings.HasPrefix(string(r.body), `{"errcode":40097,`) {
		t.Errorf("unconfigured type: getticket = %s; want errcode 40097", r.body)
	}
	h.fake.err = broker.ErrNoToken
	r = h.do(t, "GET", "/cgi-bin/ticket/getticket?type=jsapi&access_token="+tokenA, "", nil)
	if !strings.HasPrefix(string(r.body), `{"errcode":-1,`) {
		t.Errorf("no token: getticket = %s; want errcode -1", r.body)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	h := newHarness(t)
	if r := h.do(t, "GET", "/healthz", "", nil); r.status != 200 {
		t.Errorf("/healthz = %d", r.status)
	}
	if r := h.do(t, "GET", "/readyz", "", nil); r.status != 200 {
		t.Errorf("/readyz = %d %s; want 200", r.status, r.body)
	}
	h.fake.ready = errors.New("no valid token for prod/" + appA)
	r := h.do(t, "GET", "/readyz", "", nil)
	if r.status != 503 || !bytes.Contains(r.body, []byte(notReadyReason)) {
		t.Errorf("/readyz = %d %s; want 503 with the generic reason", r.status, r.body)
	}
	h.fake.ready = nil

	h.do(t, "GET", tokenPath("prod", appA), keyOrder, nil)
	h.do(t, "GET", tokenPath("prod", appA), keyOrder, nil)
	h.do(t, "GET", tokenPath("prod", appA), "", nil)
	h.do(t, "GET", tokenPath("prod", appB), keyOrder, nil)
	h.do(t, "GET", tokenPath("evil-"+strings.Repeat("x", 10), appB), keySRE, nil)
	counts := map[[3]string]float64{
		{"prod", appA, "ok"}:                2,
		{"prod", appA, "unauthorized"}:      1,
		{"prod", appA, "unavailable"}:       0, // seeded: the first 503 is an increase
		{"prod", appB, "forbidden"}:         1,
		{"unknown", "unknown", "not_found"}: 1,
	}
	for k, want := range counts {
		if got := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues(k[0], k[1], k[2])); got != want {
			t.Errorf("token_requests_total{wx_namespace=%q,appid=%q,result=%q} = %v; want %v", k[0], k[1], k[2], got, want)
		}
	}

	r = h.do(t, "GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("/metrics = %d", r.status)
	}
	for _, want := range []string{
		`wxbroker_http_request_duration_seconds_count{code="200",listener="internal",route="/v1/namespaces/:ns/apps/:appid/access_token"} 2`,
		`wxbroker_http_request_duration_seconds_count{code="401",listener="internal",route="/v1/namespaces/:ns/apps/:appid/access_token"} 1`,
		`wxbroker_token_requests_total{appid="` + appA + `",result="ok",wx_namespace="prod"} 2`,
		`wxbroker_token_requests_total{appid="` + appB + `",result="unavailable",wx_namespace="prod"} 0`,
	} {
		if !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if bytes.Contains(r.body, []byte("evil-")) {
		t.Error("/metrics carries a label value taken from the request path")
	}
	// Unknown paths outside /v1/ go to the WeChat API gateway, whose api
	// label is bounded too (gateway_test.go).
	h.do(t, "GET", "/v1/no/such/path/"+strings.Repeat("y", 20), "", nil)
	r = h.do(t, "GET", "/metrics", "", nil)
	if bytes.Contains(r.body, []byte("yyyy")) || !bytes.Contains(r.body, []byte(`route="unmatched"`)) {
		t.Error("unmatched paths must be labelled route=\"unmatched\"")
	}
}

func TestAuditLog(t *testing.T) {
	h := newHarness(t)
	h.do(t, "GET", tokenPath("prod", appA), keyOrder, nil)
	h.do(t, "GET", tokenPath("prod", appB), keyOrder, nil)
	h.do(t, "GET", "/cgi-bin/token?grant_type=client_credential&appid="+appA+"&secret="+keyOrder, "", nil)

	entries := h.audit.All()
	if len(entries) != 3 {
		t.Fatalf("audit lines = %d; want 3", len(entries))
	}
	first := entries[0].ContextMap()
	want := map[string]any{
		"event": "access_token", "client": "order-service", "namespace": "prod", "appid": appA,
		"result": "ok", "token_sha256": tokenRef(tokenA),
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("audit field %s = %v; want %v", k, first[k], v)
		}
	}
	if second := entries[1].ContextMap(); second["result"] != "forbidden" || second["token_sha256"] != "" {
		t.Errorf("refused read audit = %v", second)
	}
	if third := entries[2].ContextMap(); third["event"] != "cgi_token" || third["client"] != "order-service" {
		t.Errorf("cgi-bin audit = %v", third)
	}
	for _, e := range entries {
		line, _ := json.Marshal(e.ContextMap())
		for _, secret := range []string{tokenA, keyOrder, "TOKEN-B"} {
			if bytes.Contains(line, []byte(secret)) {
				t.Errorf("audit line %s leaks %q", line, secret)
			}
		}
	}
}

// countingWriter counts Write calls (each one a syscall on a real file).
type countingWriter struct {
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func TestDefaultAuditLoggerIsBuffered(t *testing.T) {
	w := &countingWriter{}
	a, err := New(Options{
		Tokens: newFake(), Config: testConfig(), Logger: zap.NewNop(),
		Metrics: metrics.New(prometheus.NewRegistry()), AuditWriter: w,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	const reads = 500
	for range reads {
		req := httptest.NewRequest("GET", tokenPath("prod", appA), nil)
		req.Header.Set("Authorization", "Bearer "+keyOrder)
		a.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	w.mu.Lock()
	during := w.writes
	w.mu.Unlock()
	if during > 5 {
		t.Errorf("%d reads caused %d writes; want them buffered", reads, during)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	lines := strings.Count(w.buf.String(), "\n")
	if lines != reads {
		t.Errorf("after Close the audit log holds %d lines; want %d", lines, reads)
	}
	if strings.Contains(w.buf.String(), tokenA) || strings.Contains(w.buf.String(), keyOrder) {
		t.Error("audit log leaks a credential")
	}
}

func TestNewValidates(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	good := Options{Tokens: newFake(), Config: testConfig(), Logger: zap.NewNop(), Metrics: m}
	bad := testConfig()
	bad.Clients[0].KeySHA256 = "xyz"
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no tokens", func(o *Options) { o.Tokens = nil }, "Options.Tokens is required"},
		{"no config", func(o *Options) { o.Config = nil }, "Options.Config is required"},
		{"no logger", func(o *Options) { o.Logger = nil }, "Options.Logger is required"},
		{"no metrics", func(o *Options) { o.Metrics = nil }, "Options.Metrics is required"},
		{"bad digest", func(o *Options) { o.Config = bad }, "key_sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.edit(&o)
			if _, err := New(o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"plain-Token_09", `quo"te`, "back\\slash", "<html>", "ctl\x01", "ünï", ""} {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Errorf("appendString(%q) = %s, decodes to %q (%v)", s, got, back, err)
		}
	}
}

func TestServerLimitsHeaders(t *testing.T) {
	h := newHarness(t)
	srv := h.api.Server("127.0.0.1:0")
	ts := httptest.NewUnstartedServer(srv.Handler)
	ts.Config = srv
	ts.Start()
	t.Cleanup(ts.Close)
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/healthz", nil)
	req.Header.Set("X-Padding", strings.Repeat("p", 2*MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversize headers = %d; want 431", resp.StatusCode)
	}
	resp, err = http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d", resp.StatusCode)
	}
}
