package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/metrics"
)

// These tests pin the fixes of the security review (issue 10).

// TestAuditTruncatesUntrustedValues (finding 5): a namespace, appid or
// namespace header of 12 KB from one anonymous request yields a short audit
// line whose values are cut and marked, in both the default log and a
// caller's zap logger.
func TestAuditTruncatesUntrustedValues(t *testing.T) {
	huge := strings.Repeat("n", 12<<10)
	h := newHarness(t)
	h.do(t, "GET", tokenPath(huge, huge), "", nil)
	h.do(t, "GET", "/cgi-bin/token?grant_type=client_credential&appid="+huge+"&secret="+keyOrder, "", nil,
		namespaceHeader, huge)
	entries := h.audit.All()
	if len(entries) != 2 {
		t.Fatalf("audit lines = %d; want 2", len(entries))
	}
	for _, e := range entries {
		line, _ := json.Marshal(e.ContextMap())
		if len(line) > 1024 {
			t.Errorf("zap audit line is %d bytes; want under 1 KB", len(line))
		}
		for _, k := range []string{"namespace", "appid"} {
			if v, _ := e.ContextMap()[k].(string); !strings.HasSuffix(v, auditTruncated) || len(v) > auditMaxValue+len(auditTruncated) {
				t.Errorf("%s = %q; want at most %d bytes and the truncation mark", k, v, auditMaxValue)
			}
		}
	}

	var w bytes.Buffer
	l := newAuditLog(&w, "json")
	l.line(time.Now(), eventAccessToken, "c", huge, "wx"+strings.Repeat("é", 6<<10), "forbidden", "", "1.2.3.4:5")
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	if w.Len() > 1024 {
		t.Fatalf("default audit line is %d bytes; want under 1 KB", w.Len())
	}
	var m map[string]string
	if err := json.Unmarshal(w.Bytes(), &m); err != nil {
		t.Fatalf("line %q is not JSON: %v", w.String(), err)
	}
	if !strings.HasSuffix(m["namespace"], auditTruncated) || !strings.HasSuffix(m["appid"], auditTruncated) ||
		m["remote"] != "1.2.3.4:5" {
		t.Errorf("fields = %v; want namespace and appid marked truncated, remote intact", m)
	}
}

// TestAuditBoundedValueAllocatesNothing keeps the hot path allocation-free
// for ordinary values.
func TestAuditBoundedValueAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = appendBounded(buf[:0], "wx04a7af67c8f47620") }); n != 0 {
		t.Errorf("appendBounded allocates %v times per call; want 0", n)
	}
}

// TestReadyzHidesCause (finding 8): /readyz answers a generic reason, never
// the broker's error (a Redis address or message); the cause is logged.
func TestReadyzHidesCause(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	fake := newFake()
	a, err := New(Options{Tokens: fake, Config: testConfig(), Logger: zap.New(core), AuditLogger: zap.NewNop(),
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	fake.ready = errors.New("broker: no valid access token cached, redis unavailable: dial tcp 10.1.2.3:6379: connect: connection refused")
	for range 3 {
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		if rec.Code != 503 || strings.Contains(rec.Body.String(), "10.1.2.3") || strings.Contains(rec.Body.String(), "redis") ||
			!strings.Contains(rec.Body.String(), notReadyReason) {
			t.Fatalf("/readyz = %d %s; want 503 with the generic reason", rec.Code, rec.Body)
		}
	}
	if n := logs.FilterMessage("not ready").Len(); n != 1 {
		t.Errorf("logged %d 'not ready' lines for 3 probes with one cause; want 1", n)
	}
	if l := logs.All(); len(l) == 0 || !strings.Contains(l[0].ContextMap()["error"].(string), "10.1.2.3") {
		t.Errorf("log lacks the cause: %v", l)
	}
	// Ready again, then the same cause again: logged again.
	fake.ready = nil
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	fake.ready = errors.New("broker: no valid access token cached, redis unavailable: dial tcp 10.1.2.3:6379: connect: connection refused")
	a.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 || logs.FilterMessage("not ready").Len() != 2 {
		t.Errorf("after a ready probe, a new outage logged %d lines in all; want 2", logs.FilterMessage("not ready").Len())
	}
}

// TestInvalidatePermissionAndRateLimit (finding 9): a client with
// invalidate: false may read but not report (403); a client's reports that
// would cost WeChat a call are rate limited (429) before anything is spent,
// a stale one never is; the default allows.
func TestInvalidatePermissionAndRateLimit(t *testing.T) {
	no := false
	cfg := testConfig()
	cfg.Clients[0].Invalidate = &no        // order-service: read only
	cfg.Clients[1].InvalidatePerMinute = 2 // staging-service
	fake := newFake()
	a, err := New(Options{Tokens: fake, Config: cfg, Logger: zap.NewNop(), AuditLogger: zap.NewNop(),
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	h := &harness{api: a, fake: fake}
	body := func() *strings.Reader { return strings.NewReader(`{"access_token":"x"}`) }

	if r := h.do(t, "GET", tokenPath("prod", appA), keyOrder, nil); r.status != 200 {
		t.Fatalf("read with invalidate: false = %d; want 200", r.status)
	}
	if r := h.do(t, "POST", tokenPath("prod", appA)+"/invalidate", keyOrder, body()); r.status != 403 || r.errorCode(t) != codeForbidden {
		t.Fatalf("report with invalidate: false = %d %s; want 403", r.status, r.body)
	}
	// Each report names the current token, so each would cost WeChat a
	// call and counts.
	current := func() string {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return fake.tokens[appKey{"staging", appC}].AccessToken
	}
	stale := current()
	var last response
	for range 3 {
		last = h.do(t, "POST", tokenPath("staging", appC)+"/invalidate", keyStg, strings.NewReader(`{"access_token":"`+current()+`"}`))
	}
	if last.status != 429 || last.errorCode(t) != codeTooManyRequests {
		t.Fatalf("3rd report with invalidate_per_minute 2 = %d %s; want 429", last.status, last.body)
	}
	// A report of a token that is no longer current costs nothing: never
	// refused (issue 14, item 8).
	if r := h.do(t, "POST", tokenPath("staging", appC)+"/invalidate", keyStg, strings.NewReader(`{"access_token":"`+stale+`"}`)); r.status != 200 {
		t.Fatalf("stale report past invalidate_per_minute = %d %s; want 200 (free)", r.status, r.body)
	}
	if r := h.do(t, "POST", tokenPath("prod", appA)+"/invalidate", keyMulti, body()); r.status != 200 {
		t.Fatalf("report by a client with the defaults = %d %s; want 200", r.status, r.body)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.invalidated) != 4 {
		t.Errorf("reports that reached the broker = %v; want 4 (2 staging, 1 stale staging, 1 multi)", fake.invalidated)
	}
}
