package api

import (
	"context"
	"encoding/json"
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
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

const (
	compA  = "wx00000000000000c1" // open/
	compB  = "wx00000000000000c2" // open/, no client may read it but the admin
	authA  = "wx0000000000000a01"
	authB  = "wx0000000000000b02"
	authRv = "wx0000000000000e03" // revoked
	authRe = "wx0000000000000e04" // needs re-authorization

	keyComp    = "comp-key-0123456789"     // open/compA
	keyAuthA   = "autha-key-0123456789"    // open/compA/authA
	keyAllAuth = "allauth-key-0123456789"  // open/compA/*
	keyOpAdmin = "opadmin-key-0123456789"  // admin, open/compA and */*/*
	keyNoRep   = "noreport-key-0123456789" // open/compA/*, may not report

	compTokenA = "COMPONENT-TOKEN-A"
	authTokenA = "AUTHORIZER-TOKEN-A"
	refreshA   = "REFRESH-TOKEN-A-secret"
)

// fakePlatform is a Platform and EventSink with fixed answers.
type fakePlatform struct {
	mu         sync.Mutex
	components map[componentKey]bool
	comp       map[componentKey]broker.Token
	auth       map[string]broker.Token // comp/auth
	authErr    map[string]error        // comp/auth
	refresh    map[string]string       // comp/auth → refresh token
	prev       map[string]string       // previous token → comp/auth
	reports    []string
	preauth    []string

	seen      map[string]bool
	events    []msgcrypt.Event
	handleErr error
	block     chan struct{} // HandleEvent waits for it when set
	seenErr   error
}

func newFakePlatform() *fakePlatform {
	return &fakePlatform{
		components: map[componentKey]bool{{"open", compA}: true, {"open", compB}: true},
		comp: map[componentKey]broker.Token{
			{"open", compA}: {AccessToken: compTokenA, ExpiresAt: testNow.Add(7200 * time.Second), Generation: 2},
			{"open", compB}: {AccessToken: "COMPONENT-TOKEN-B", ExpiresAt: testNow.Add(7200 * time.Second), Generation: 1},
		},
		auth: map[string]broker.Token{
			compA + "/" + authA: {AccessToken: authTokenA, ExpiresAt: testNow.Add(3600 * time.Second), Generation: 5},
			compA + "/" + authB: {AccessToken: "AUTHORIZER-TOKEN-B", ExpiresAt: testNow.Add(3600 * time.Second), Generation: 1},
		},
		authErr: map[string]error{
			compA + "/" + authRv: broker.ErrRevoked,
			compA + "/" + authRe: broker.ErrNeedsReauthorization,
		},
		refresh: map[string]string{compA + "/" + authA: refreshA},
		prev:    map[string]string{},
		seen:    map[string]bool{},
	}
}

func (f *fakePlatform) Component(ns, appid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.components[componentKey{ns, appid}]
}

func (f *fakePlatform) ComponentToken(ns, c string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.comp[componentKey{ns, c}]
	if !ok {
		return broker.Token{}, broker.ErrUnknownComponent
	}
	return t, nil
}

func (f *fakePlatform) AuthorizerToken(ns, c, a string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.components[componentKey{ns, c}] {
		return broker.Token{}, broker.ErrUnknownComponent
	}
	if err := f.authErr[c+"/"+a]; err != nil {
		return broker.Token{}, err
	}
	t, ok := f.auth[c+"/"+a]
	if !ok {
		return broker.Token{}, broker.ErrUnknownAuthorizer
	}
	return t, nil
}

// report charges a report of the current token, records it and replaces
// the token (the fake has no WeChat to check with).
func (f *fakePlatform) report(name string, cur *broker.Token, r broker.Report) (broker.Token, error) {
	proof := map[broker.Proof]string{broker.Proven: "proven", broker.Unproven: "unproven", broker.MustConfirm: "confirm"}[r.Proof]
	f.reports = append(f.reports, name+" "+r.Token+" "+r.Source+" "+proof)
	if cur.AccessToken != r.Token {
		return *cur, nil
	}
	if r.Charge != nil {
		if err := r.Charge(); err != nil {
			return broker.Token{}, fmt.Errorf("refused: %w", err)
		}
	}
	f.prev[cur.AccessToken] = name
	cur.AccessToken += "-next"
	cur.Generation++
	return *cur, nil
}

func (f *fakePlatform) ReportComponent(_ context.Context, ns, c string, r broker.Report) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.comp[componentKey{ns, c}]
	if !ok {
		return broker.Token{}, broker.ErrUnknownComponent
	}
	tok, err := f.report(c, &t, r)
	f.comp[componentKey{ns, c}] = t
	return tok, err
}

func (f *fakePlatform) ReportAuthorizer(_ context.Context, ns, c, a string, r broker.Report) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.auth[c+"/"+a]
	if !ok {
		return broker.Token{}, broker.ErrUnknownAuthorizer
	}
	tok, err := f.report(c+"/"+a, &t, r)
	f.auth[c+"/"+a] = t
	return tok, err
}

func (f *fakePlatform) ByToken(tok string) (string, string, string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, t := range f.comp {
		if t.AccessToken == tok {
			return k.ns, k.component, "", true
		}
	}
	for k, t := range f.auth {
		if t.AccessToken == tok {
			c, a, _ := strings.Cut(k, "/")
			return "open", c, a, true
		}
	}
	if k, ok := f.prev[tok]; ok {
		c, a, _ := strings.Cut(k, "/")
		return "open", c, a, true
	}
	return "", "", "", false
}

func (f *fakePlatform) Authorizers(_ context.Context, ns, c string) ([]broker.Authorizer, error) {
	return []broker.Authorizer{
		{AppID: authA, State: "active", ExpiresAt: testNow.Add(time.Hour), Source: "event"},
		{AppID: authRe, State: "needs_reauthorization", LastError: "61023 refresh_token is invalid", Source: "import"},
	}, nil
}

func (f *fakePlatform) Import(_ context.Context, ns, c string, in []broker.RefreshTokenEntry) (broker.ImportResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var res broker.ImportResult
	for _, e := range in {
		k := c + "/" + e.AuthorizerAppID
		if f.refresh[k] == e.RefreshToken {
			res.Unchanged++
			continue
		}
		f.refresh[k] = e.RefreshToken
		res.Imported++
	}
	return res, nil
}

func (f *fakePlatform) Export(_ context.Context, ns, c string) ([]broker.RefreshTokenEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broker.RefreshTokenEntry
	for k, rt := range f.refresh {
		cc, a, _ := strings.Cut(k, "/")
		if cc == c {
			out = append(out, broker.RefreshTokenEntry{AuthorizerAppID: a, RefreshToken: rt})
		}
	}
	return out, nil
}

func (f *fakePlatform) PreAuthURL(_ context.Context, ns, c, redirect string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.preauth = append(f.preauth, redirect)
	return "https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=" + c + "&pre_auth_code=P&redirect_uri=" + url.QueryEscape(redirect), nil
}

func (f *fakePlatform) HandleEvent(ctx context.Context, ns, c string, ev msgcrypt.Event) error {
	f.mu.Lock()
	block, err := f.block, f.handleErr
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, ev)
	return nil
}

func (f *fakePlatform) FirstSeen(_ context.Context, ns, c, key string, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seenErr != nil {
		return false, f.seenErr
	}
	if ttl < 10*time.Minute {
		return false, fmt.Errorf("ttl %s shorter than the timestamp window both ways", ttl)
	}
	k := ns + "/" + c + "/" + key
	if f.seen[k] {
		return false, nil
	}
	f.seen[k] = true
	return true, nil
}

func (f *fakePlatform) eventList() []msgcrypt.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]msgcrypt.Event(nil), f.events...)
}

func (f *fakePlatform) reportList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reports...)
}

// platformConfig is testConfig with namespace "open" of two components and
// clients for them.
func platformConfig() *config.Config {
	c := testConfig()
	comp := func(id string) *config.Component {
		return &config.Component{AppID: id, Secret: "cs", Token: "msgToken4711", EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}
	}
	c.Namespaces["open"] = &config.Namespace{Components: []*config.Component{comp(compA), comp(compB)}}
	no := false
	c.Clients = append(c.Clients,
		config.Client{Name: "comp", KeySHA256: config.HashKey(keyComp), Allow: []string{"open/" + compA}},
		config.Client{Name: "autha", KeySHA256: config.HashKey(keyAuthA), Allow: []string{"open/" + compA + "/" + authA}},
		config.Client{Name: "allauth", KeySHA256: config.HashKey(keyAllAuth), Allow: []string{"open/" + compA + "/*"}},
		config.Client{Name: "opadmin", KeySHA256: config.HashKey(keyOpAdmin), Allow: []string{"open/" + compA, "*/*/*"}, Admin: true},
		config.Client{Name: "noreport", KeySHA256: config.HashKey(keyNoRep), Allow: []string{"open/" + compA + "/*"}, Invalidate: &no},
	)
	return c
}

type platformHarness struct {
	*harness
	p *fakePlatform
}

func newPlatformHarness(t *testing.T) *platformHarness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	core, logs := observer.New(zapcore.InfoLevel)
	fake, p := newFake(), newFakePlatform()
	a, err := New(Options{
		Tokens: fake, Platform: p, Config: platformConfig(), Logger: zap.NewNop(), AuditLogger: zap.New(core),
		Metrics: m, Gatherer: reg, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return &platformHarness{harness: &harness{api: a, fake: fake, reg: reg, m: m, audit: logs}, p: p}
}

func compPath(c, rest string) string { return "/v1/namespaces/open/components/" + c + rest }

func authPath(a, rest string) string {
	return compPath(compA, "/authorizers/"+a+"/access_token"+rest)
}

// TestPlatformRoutesAuthMatrix: who may call which Open Platform route,
// and what each engine error answers.
func TestPlatformRoutesAuthMatrix(t *testing.T) {
	importBody := `[{"authorizer_appid":"` + authB + `","authorizer_refresh_token":"R"}]`
	tests := []struct {
		name, method, path, key, body string
		wantStatus                    int
		wantCode                      string
	}{
		{"component token", "GET", compPath(compA, "/access_token"), keyComp, "", 200, ""},
		{"component token, no key", "GET", compPath(compA, "/access_token"), "", "", 401, "unauthorized"},
		{"component token, */* admin", "GET", compPath(compA, "/access_token"), keySRE, "", 200, ""},
		{"component token, other component", "GET", compPath(compB, "/access_token"), keyComp, "", 403, "forbidden"},
		{"component token, authorizer pattern only", "GET", compPath(compA, "/access_token"), keyAllAuth, "", 403, "forbidden"},
		{"component token, unknown component", "GET", compPath("wx00000000000000ff", "/access_token"), keySRE, "", 404, "not_found"},
		{"component token, app name", "GET", "/v1/namespaces/prod/components/" + appA + "/access_token", keySRE, "", 404, "not_found"},
		{"authorizer token, exact", "GET", authPath(authA, ""), keyAuthA, "", 200, ""},
		{"authorizer token, other authorizer", "GET", authPath(authB, ""), keyAuthA, "", 403, "forbidden"},
		{"authorizer token, component/*", "GET", authPath(authB, ""), keyAllAuth, "", 200, ""},
		{"authorizer token, two-part component name", "GET", authPath(authA, ""), keyComp, "", 403, "forbidden"},
		{"authorizer token, */* never grants authorizers", "GET", authPath(authA, ""), keySRE, "", 403, "forbidden"},
		{"authorizer token, */*/*", "GET", authPath(authA, ""), keyOpAdmin, "", 200, ""},
		{"authorizer token, unknown authorizer", "GET", authPath("wx0000000000000fff", ""), keyAllAuth, "", 404, "not_found"},
		{"authorizer token, revoked", "GET", authPath(authRv, ""), keyAllAuth, "", 410, "revoked"},
		{"authorizer token, needs re-authorization", "GET", authPath(authRe, ""), keyAllAuth, "", 409, "needs_reauthorization"},
		{"authorizer invalidate", "POST", authPath(authA, "/invalidate"), keyAllAuth, `{"access_token":"x"}`, 200, ""},
		{"authorizer invalidate, no permission", "POST", authPath(authA, "/invalidate"), keyNoRep, `{"access_token":"x"}`, 403, "forbidden"},
		{"authorizer invalidate, empty", "POST", authPath(authA, "/invalidate"), keyAllAuth, `{}`, 400, "bad_request"},
		{"component invalidate", "POST", compPath(compA, "/access_token/invalidate"), keyComp, `{"access_token":"x"}`, 200, ""},
		{"list", "GET", compPath(compA, "/authorizers"), keyComp, "", 200, ""},
		{"list, authorizer pattern only", "GET", compPath(compA, "/authorizers"), keyAllAuth, "", 403, "forbidden"},
		{"preauth", "GET", compPath(compA, "/preauth_url?redirect_uri=https%3A%2F%2Fshop.example%2Fdone"), keyComp, "", 200, ""},
		{"preauth, no redirect_uri", "GET", compPath(compA, "/preauth_url"), keyComp, "", 400, "bad_request"},
		{"preauth, relative redirect_uri", "GET", compPath(compA, "/preauth_url?redirect_uri=/done"), keyComp, "", 400, "bad_request"},
		{"preauth, javascript redirect_uri", "GET", compPath(compA, "/preauth_url?redirect_uri=javascript:alert(1)"), keyComp, "", 400, "bad_request"},
		{"preauth, forbidden before validation", "GET", compPath(compB, "/preauth_url"), keyComp, "", 403, "forbidden"},
		{"import, not admin", "POST", compPath(compA, "/authorizers"), keyComp, importBody, 403, "forbidden"},
		{"import, admin", "POST", compPath(compA, "/authorizers"), keyOpAdmin, importBody, 200, ""},
		{"import, admin not allowed on the component", "POST", compPath(compB, "/authorizers"), keyOpAdmin, importBody, 403, "forbidden"},
		{"import, not an array", "POST", compPath(compA, "/authorizers"), keyOpAdmin, `{"authorizer_appid":"x"}`, 400, "bad_request"},
		{"import, unknown field", "POST", compPath(compA, "/authorizers"), keyOpAdmin, `[{"authorizer_appid":"` + authB + `","refresh_token":"R"}]`, 400, "bad_request"},
		{"import, empty", "POST", compPath(compA, "/authorizers"), keyOpAdmin, `[]`, 400, "bad_request"},
		{"import, oversize", "POST", compPath(compA, "/authorizers"), keyOpAdmin, `[{"authorizer_appid":"` + authB + `","authorizer_refresh_token":"` + strings.Repeat("R", MaxBodyBytes) + `"}]`, 413, "payload_too_large"},
		{"export, not admin", "GET", compPath(compA, "/authorizers/export"), keyComp, "", 403, "forbidden"},
		{"export, admin", "GET", compPath(compA, "/authorizers/export"), keyOpAdmin, "", 200, ""},
		{"export, */* admin", "GET", compPath(compA, "/authorizers/export"), keySRE, "", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newPlatformHarness(t)
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
			if tt.wantCode != "" {
				if got := r.errorCode(t); got != tt.wantCode {
					t.Errorf("error code = %q; want %q (body %s)", got, tt.wantCode, r.body)
				}
			}
		})
	}
}

// TestPlatformTokenAnswer: component and authorizer tokens answer the JSON
// of an app token, each read writes one audit line, and reads count under
// the component's appid (no per-authorizer series).
func TestPlatformTokenAnswer(t *testing.T) {
	h := newPlatformHarness(t)
	r := h.do(t, "GET", compPath(compA, "/access_token"), keyComp, nil)
	want := `{"access_token":"COMPONENT-TOKEN-A","expires_in":7200,"expires_at":"2025-01-01T02:00:00Z","generation":2}`
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("component token = %d %s; want %s", r.status, r.body, want)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	r = h.do(t, "GET", authPath(authA, ""), keyAuthA, nil)
	want = `{"access_token":"AUTHORIZER-TOKEN-A","expires_in":3600,"expires_at":"2025-01-01T01:00:00Z","generation":5}`
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("authorizer token = %d %s; want %s", r.status, r.body, want)
	}
	h.do(t, "GET", authPath(authB, ""), keyAuthA, nil) // refused
	lines := h.audit.All()
	if len(lines) != 3 {
		t.Fatalf("%d audit lines; want 3", len(lines))
	}
	wantLines := []struct{ event, client, appid, result string }{
		{eventComponentToken, "comp", compA, "ok"},
		{eventAuthorizerToken, "autha", compA + "/" + authA, "ok"},
		{eventAuthorizerToken, "autha", compA + "/" + authB, "forbidden"},
	}
	for i, w := range wantLines {
		f := lines[i].ContextMap()
		if f["event"] != w.event || f["client"] != w.client || f["namespace"] != "open" || f["appid"] != w.appid || f["result"] != w.result {
			t.Errorf("audit line %d = %v; want %+v", i, f, w)
		}
		if i < 2 && (f["token_sha256"] == "" || strings.Contains(fmt.Sprint(f), "TOKEN")) {
			t.Errorf("audit line %d: token reference %v (must be a digest, never the token)", i, f["token_sha256"])
		}
	}
	if got := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues("open", compA, "ok")); got != 2 {
		t.Errorf("token_requests{open,%s,ok} = %v; want 2 (component and authorizer reads)", compA, got)
	}
	if got := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues("open", compA, "forbidden")); got != 1 {
		t.Errorf("token_requests{open,%s,forbidden} = %v; want 1", compA, got)
	}
	if s := seriesNaming(t, h.m.TokenRequests, authA); s != "" {
		t.Errorf("a token_requests series names an authorizer: %s", s)
	}
	// An unknown component counts as "unknown", never as the path's value.
	h.do(t, "GET", compPath("wx00000000000000ff", "/access_token"), keySRE, nil)
	if got := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues("open", unknownApp, "not_found")); got != 1 {
		t.Errorf("token_requests{open,unknown,not_found} = %v; want 1", got)
	}
}

// TestPlatformInvalidate: an authorizer's report is unproven (checked with
// WeChat first), charged to the client, and answers the new token.
func TestPlatformInvalidate(t *testing.T) {
	h := newPlatformHarness(t)
	r := h.do(t, "POST", authPath(authA, "/invalidate"), keyAllAuth, strings.NewReader(`{"access_token":"`+authTokenA+`"}`))
	if r.status != 200 || !strings.Contains(string(r.body), `"access_token":"AUTHORIZER-TOKEN-A-next"`) || !strings.Contains(string(r.body), `"generation":6`) {
		t.Fatalf("invalidate = %d %s", r.status, r.body)
	}
	r = h.do(t, "POST", compPath(compA, "/access_token/invalidate"), keyComp, strings.NewReader(`{"access_token":"stale"}`))
	if r.status != 200 || !strings.Contains(string(r.body), compTokenA) {
		t.Fatalf("component invalidate of a stale token = %d %s; want the current token", r.status, r.body)
	}
	want := []string{compA + "/" + authA + " " + authTokenA + " client unproven", compA + " stale client unproven"}
	if got := h.p.reportList(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reports = %q; want %q", got, want)
	}
	if got := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues("open", compA, "ok")); got != 2 {
		t.Errorf("token_requests ok = %v; want 2", got)
	}
}

// TestPlatformImportExport: an import is validated, idempotent and never
// echoes a refresh token; export (admin) is the one route that returns
// them.
func TestPlatformImportExport(t *testing.T) {
	h := newPlatformHarness(t)
	body := `[
	 {"authorizer_appid":"` + authB + `","authorizer_refresh_token":"REFRESH-B-secret"},
	 {"authorizer_appid":"` + authA + `","authorizer_refresh_token":"` + refreshA + `"},
	 {"authorizer_appid":"` + authB + `","authorizer_refresh_token":"REFRESH-B-secret"},
	 {"authorizer_appid":"not-an-appid","authorizer_refresh_token":"REFRESH-X-secret"},
	 {"authorizer_appid":"wx0000000000000c05","authorizer_refresh_token":""},
	 {"authorizer_appid":"wx0000000000000c06","authorizer_refresh_token":"REFRESH-C6-one"},
	 {"authorizer_appid":"wx0000000000000c06","authorizer_refresh_token":"REFRESH-C6-two"}
	]`
	r := h.do(t, "POST", compPath(compA, "/authorizers"), keyOpAdmin, strings.NewReader(body))
	if r.status != 200 {
		t.Fatalf("import = %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "REFRESH") {
		t.Errorf("import answer echoes a refresh token: %s", r.body)
	}
	var res broker.ImportResult
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	// B and C6 (first) imported, A unchanged, the duplicate B skipped; the
	// bad appid, the empty token and C6's second token refused.
	if res.Imported != 2 || res.Unchanged != 1 || len(res.Rejected) != 3 {
		t.Errorf("import = %+v; want 2 imported, 1 unchanged, 3 rejected", res)
	}
	for _, p := range res.Rejected {
		if p.Problem == "" || p.AuthorizerAppID == "" {
			t.Errorf("rejected entry without appid or problem: %+v", p)
		}
	}
	// Again: nothing changes (idempotent).
	r = h.do(t, "POST", compPath(compA, "/authorizers"), keyOpAdmin, strings.NewReader(
		`[{"authorizer_appid":"`+authB+`","authorizer_refresh_token":"REFRESH-B-secret"}]`))
	if r.status != 200 || !strings.Contains(string(r.body), `"imported":0,"unchanged":1`) {
		t.Errorf("second import = %d %s; want 0 imported, 1 unchanged", r.status, r.body)
	}
	many := make([]broker.RefreshTokenEntry, maxImportEntries+1)
	for i := range many {
		many[i] = broker.RefreshTokenEntry{AuthorizerAppID: fmt.Sprintf("wx%016x", i), RefreshToken: "R"}
	}
	b, _ := json.Marshal(many)
	if r = h.do(t, "POST", compPath(compA, "/authorizers"), keyOpAdmin, strings.NewReader(string(b))); r.status != 400 {
		t.Errorf("import of %d entries = %d %s; want 400", len(many), r.status, r.body)
	}

	r = h.do(t, "GET", compPath(compA, "/authorizers/export"), keyOpAdmin, nil)
	var out []broker.RefreshTokenEntry
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
		t.Fatalf("export = %d %s", r.status, r.body)
	}
	got := map[string]string{}
	for _, e := range out {
		got[e.AuthorizerAppID] = e.RefreshToken
	}
	if got[authA] != refreshA || got[authB] != "REFRESH-B-secret" || len(got) != 3 {
		t.Errorf("export = %v; want A, B and C6 with their refresh tokens", got)
	}
	for _, l := range h.audit.All() {
		if s := fmt.Sprint(l.ContextMap()); strings.Contains(s, "REFRESH") {
			t.Errorf("audit line holds a refresh token: %s", s)
		}
	}
	var events []string
	for _, l := range h.audit.All() {
		events = append(events, l.ContextMap()["event"].(string))
	}
	if want := "[authorizers_import authorizers_import authorizers_import authorizers_export]"; fmt.Sprint(events) != want {
		t.Errorf("audit events = %v; want %s", events, want)
	}
}

// TestPlatformListAndPreAuth: the list shows states without refresh
// tokens; the preauth link is the engine's for the caller's redirect_uri.
func TestPlatformListAndPreAuth(t *testing.T) {
	h := newPlatformHarness(t)
	r := h.do(t, "GET", compPath(compA, "/authorizers"), keyComp, nil)
	var list authorizerList
	if r.status != 200 || json.Unmarshal(r.body, &list) != nil || list.ComponentAppID != compA || len(list.Authorizers) != 2 {
		t.Fatalf("list = %d %s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), `"state":"needs_reauthorization","last_error":"61023 refresh_token is invalid"`) {
		t.Errorf("list lacks the state and last error: %s", r.body)
	}
	r = h.do(t, "GET", compPath(compA, "/preauth_url?redirect_uri=https%3A%2F%2Fshop.example%2Fdone%3Fa%3D1"), keyComp, nil)
	var pa preAuthAnswer
	if r.status != 200 || json.Unmarshal(r.body, &pa) != nil || !strings.Contains(pa.PreAuthURL, "componentloginpage") {
		t.Fatalf("preauth_url = %d %s", r.status, r.body)
	}
	if got := h.p.preauth; len(got) != 1 || got[0] != "https://shop.example/done?a=1" {
		t.Errorf("redirect_uri given to the engine = %q", got)
	}
}

// TestPlatformNoEngine: without a Platform every component is unknown.
func TestPlatformNoEngine(t *testing.T) {
	a, err := New(Options{Tokens: newFake(), Config: platformConfig(), Logger: zap.NewNop(), AuditWriter: io.Discard,
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h := &harness{api: a}
	if r := h.do(t, "GET", compPath(compA, "/access_token"), keyComp, nil); r.status != 404 {
		t.Errorf("component token without an engine = %d %s; want 404", r.status, r.body)
	}
}

// opGateway is an API over the fake TokenSource and Platform whose gateway
// sends to a scripted WeChat.
type opGateway struct {
	url string
	p   *fakePlatform
	m   *metrics.Metrics
	up  *upstream
}

func newOpGateway(t *testing.T, fn func(w http.ResponseWriter, r *http.Request, body []byte)) *opGateway {
	t.Helper()
	up := newUpstream(t, fn)
	cfg := platformConfig()
	cfg.WeChat.BaseURL = up.URL
	cfg.Gateway.Timeout = 10 * time.Second
	p := newFakePlatform()
	m := metrics.New(prometheus.NewRegistry())
	a, err := New(Options{Tokens: newFake(), Platform: p, Config: cfg, Logger: zap.NewNop(), Metrics: m, AuditWriter: io.Discard,
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &opGateway{url: srv.URL, p: p, m: m, up: up}
}

func (g *opGateway) call(t *testing.T, method, pathQuery string, header http.Header, body string) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, g.url+pathQuery, rd)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &v) != nil {
		t.Fatalf("%s %s = %d %s", method, pathQuery, resp.StatusCode, b)
	}
	return v
}

func opHeader(key, app string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}, appHeader: {app}}
}

// tokenWechat is a WeChat that accepts only the tokens in good (by query
// parameter) and answers 40001 to any other; it records what it saw.
type tokenWechat struct {
	mu   sync.Mutex
	good map[string]bool
	seen []string // param=value per request
}

func (w *tokenWechat) serve(param string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(rw http.ResponseWriter, r *http.Request, _ []byte) {
		tok := r.URL.Query().Get(param)
		w.mu.Lock()
		w.seen = append(w.seen, r.URL.Path+" "+param+"="+tok+" auth="+r.Header.Get("Authorization")+r.Header.Get(appHeader))
		ok := w.good[tok]
		w.mu.Unlock()
		if !ok {
			answerJSON(rw, `{"errcode":40001,"errmsg":"invalid credential"}`)
			return
		}
		answerJSON(rw, `{"errcode":0,"errmsg":"ok"}`)
	}
}

func (w *tokenWechat) requests() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

// TestGatewayAuthorizer: Bearer + X-Wxbroker-App ns/component/authorizer
// injects the authorizer's token; a JSON 40001 makes one report and one
// re-send with the new token; series name the component, never the
// authorizer; the ACL needs three parts.
func TestGatewayAuthorizer(t *testing.T) {
	wx := &tokenWechat{good: map[string]bool{authTokenA + "-next": true}}
	g := newOpGateway(t, wx.serve("access_token"))
	v := g.call(t, "POST", "/cgi-bin/message/custom/send?access_token=caller-junk", opHeader(keyAllAuth, "open/"+compA+"/"+authA), `{"touser":"o"}`)
	if errcode(v) != 0 {
		t.Fatalf("answer %v; want errcode 0 after the retry", v)
	}
	want := []string{
		"/cgi-bin/message/custom/send access_token=" + authTokenA + " auth=",
		"/cgi-bin/message/custom/send access_token=" + authTokenA + "-next auth=",
	}
	if got := wx.requests(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("WeChat saw %q; want %q (the injected token, no Authorization or X-Wxbroker-App)", got, want)
	}
	if got := g.p.reportList(); len(got) != 1 || got[0] != compA+"/"+authA+" "+authTokenA+" proxy unproven" {
		t.Errorf("reports = %q; want one unproven proxy report of the injected token", got)
	}
	if n := testutil.ToFloat64(g.m.Gateway.Retries.WithLabelValues("open", compA, metrics.RetrySuccess)); n != 1 {
		t.Errorf("retries{open,%s,success} = %v; want 1", compA, n)
	}
	if n := testutil.ToFloat64(g.m.Gateway.Requests.WithLabelValues("open", compA, "/cgi-bin/message/custom/send", metrics.GatewayOK, "0")); n != 1 {
		t.Errorf("gateway requests of the component = %v; want 1", n)
	}
	for _, c := range []prometheus.Collector{g.m.Gateway.Requests, g.m.Gateway.Retries} {
		if s := seriesNaming(t, c, authA); s != "" {
			t.Errorf("a gateway series names the authorizer: %s", s)
		}
	}

	// WeChat keeps refusing: one retry, never a second.
	wx.mu.Lock()
	wx.good = map[string]bool{}
	wx.seen = nil
	wx.mu.Unlock()
	v = g.call(t, "GET", "/cgi-bin/user/get", opHeader(keyAllAuth, "open/"+compA+"/"+authA), "")
	if errcode(v) != 40001 || len(wx.requests()) != 2 {
		t.Errorf("answer %v after %d WeChat requests; want 40001 after exactly 2", v, len(wx.requests()))
	}

	for _, tc := range []struct{ key, app string }{
		{keySRE, "open/" + compA + "/" + authA},   // */* never grants authorizers
		{keyComp, "open/" + compA + "/" + authA},  // the component name does not either
		{keyAuthA, "open/" + compA + "/" + authB}, // another authorizer
	} {
		if v := g.call(t, "GET", "/cgi-bin/user/get", opHeader(tc.key, tc.app), ""); errcode(v) != 40001 || !strings.Contains(v["errmsg"].(string), "allow-list") {
			t.Errorf("%s with %s = %v; want the 40001 allow-list refusal", tc.app, tc.key, v)
		}
	}
	for _, tc := range []struct {
		app  string
		code int
	}{{"open/" + compA + "/" + authRv, 61003}, {"open/" + compA + "/" + authRe, 61023}, {"open/" + compA + "/wx0000000000000fff", 61003}} {
		if v := g.call(t, "GET", "/cgi-bin/user/get", opHeader(keyAllAuth, tc.app), ""); errcode(v) != tc.code {
			t.Errorf("%s = %v; want errcode %d", tc.app, v, tc.code)
		}
	}
}

// TestGatewayAuthorizerCallerBytes: as for apps, an errcode 40001 that may
// be the caller's own bytes (a download path, a text/plain answer, an
// errcode nested in the caller's data) reports nothing and is not re-sent.
func TestGatewayAuthorizerCallerBytes(t *testing.T) {
	var mu sync.Mutex
	n := 0
	g := newOpGateway(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		mu.Lock()
		n++
		mu.Unlock()
		switch r.URL.Path {
		case "/cgi-bin/media/get":
			answerJSON(w, `{"errcode":40001,"errmsg":"the file's own bytes"}`)
		case "/cgi-bin/plain":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, `{"errcode":40001,"errmsg":"x"}`)
		default:
			answerJSON(w, `{"errcode":0,"data":{"errcode":40001}}`)
		}
	})
	h := opHeader(keyAllAuth, "open/"+compA+"/"+authA)
	for _, p := range []string{"/cgi-bin/media/get?media_id=M", "/cgi-bin/plain", "/cgi-bin/echo"} {
		g.call(t, "GET", p, h, "")
	}
	if r := g.p.reportList(); len(r) != 0 {
		t.Errorf("reports = %q; want none (the caller's bytes spend nothing)", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 3 {
		t.Errorf("WeChat saw %d requests; want 3 (no re-send)", n)
	}
}

// TestGatewayAuthorizerByToken: a caller without a key that presents an
// authorizer token the broker handed out (current or previous) gets the
// current one put in; its report is MustConfirm (a token is no client
// with invalidate) and charged to the component's bucket.
func TestGatewayAuthorizerByToken(t *testing.T) {
	wx := &tokenWechat{good: map[string]bool{authTokenA + "-next": true}}
	g := newOpGateway(t, wx.serve("access_token"))
	v := g.call(t, "GET", "/cgi-bin/user/get?access_token="+authTokenA, nil, "")
	if errcode(v) != 0 {
		t.Fatalf("answer %v", v)
	}
	if got := g.p.reportList(); len(got) != 1 || !strings.HasSuffix(got[0], " proxy confirm") {
		t.Errorf("reports = %q; want one MustConfirm report", got)
	}
	// The previous token now names the authorizer too and gets the current one.
	v = g.call(t, "GET", "/cgi-bin/user/get?access_token="+authTokenA, nil, "")
	if errcode(v) != 0 || len(g.p.reportList()) != 1 {
		t.Errorf("answer %v, reports %q; want 0 and no new report", v, g.p.reportList())
	}
	if v := g.call(t, "GET", "/cgi-bin/user/get?access_token=unknown-token", nil, ""); errcode(v) != 40001 {
		t.Errorf("unknown token = %v; want 40001", v)
	}
}

// TestGatewayComponentAPI: Bearer + ns/component on /cgi-bin/component/*
// fills in component_access_token, and a 40001 reports the component token
// and re-sends once; a caller may also present a component token the
// broker handed out.
func TestGatewayComponentAPI(t *testing.T) {
	wx := &tokenWechat{good: map[string]bool{compTokenA + "-next": true}}
	g := newOpGateway(t, wx.serve(componentParam))
	v := g.call(t, "POST", "/cgi-bin/component/api_get_authorizer_list", opHeader(keyComp, "open/"+compA),
		`{"component_appid":"`+compA+`","offset":0,"count":100}`)
	if errcode(v) != 0 {
		t.Fatalf("answer %v", v)
	}
	want := []string{
		"/cgi-bin/component/api_get_authorizer_list component_access_token=" + compTokenA + " auth=",
		"/cgi-bin/component/api_get_authorizer_list component_access_token=" + compTokenA + "-next auth=",
	}
	if got := wx.requests(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("WeChat saw %q; want %q", got, want)
	}
	if got := g.p.reportList(); len(got) != 1 || got[0] != compA+" "+compTokenA+" proxy unproven" {
		t.Errorf("reports = %q", got)
	}
	// Presenting a handed-out component token (the previous one, here).
	v = g.call(t, "POST", "/cgi-bin/component/api_create_preauthcode?component_access_token="+compTokenA, nil, `{}`)
	if errcode(v) != 0 {
		t.Errorf("component token caller = %v", v)
	}
	// The credential endpoints stay refused, and the ACL applies.
	if v := g.call(t, "POST", "/cgi-bin/component/api_component_token", opHeader(keyComp, "open/"+compA), `{}`); errcode(v) != 48001 {
		t.Errorf("api_component_token = %v; want 48001", v)
	}
	if v := g.call(t, "POST", "/cgi-bin/component/api_get_authorizer_list", opHeader(keyComp, "open/"+compB), `{}`); errcode(v) != 40001 {
		t.Errorf("other component = %v; want 40001 (allow-list)", v)
	}
	if v := g.call(t, "POST", "/cgi-bin/component/api_get_authorizer_list", opHeader(keyAllAuth, "open/"+compA), `{}`); errcode(v) != 40001 {
		t.Errorf("authorizer pattern on the component = %v; want 40001 (allow-list)", v)
	}
}

// seriesNaming returns a series of c that has a label value containing
// s, or "".
func seriesNaming(t *testing.T, c prometheus.Collector, s string) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), s) {
					return mf.GetName() + fmt.Sprint(m.GetLabel())
				}
			}
		}
	}
	return ""
}
