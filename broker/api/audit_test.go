package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/metrics"
)

// TestDefaultAuditLine checks the default audit log's lines: zap's
// production JSON shape (level, ts, logger, msg and the fields), escaped
// values, and the console format.
func TestDefaultAuditLine(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	tests := []struct {
		format string
		want   string
	}{
		{"json", `{"level":"info","ts":"2025-03-04T05:06:07.891Z","logger":"audit","msg":"credential request",` +
			`"event":"access_token","client":"order-service","namespace":"prod","appid":"wx\"<x>","result":"ok",` +
			`"token_sha256":"abcd0123","remote":"127.0.0.1:4242"}` + "\n"},
		{"console", "2025-03-04T05:06:07.891Z\tINFO\taudit\tcredential request\t" +
			`{"event": "access_token", "client": "order-service", "namespace": "prod", "appid": "wx\"\u003cx\u003e", ` +
			`"result": "ok", "token_sha256": "abcd0123", "remote": "127.0.0.1:4242"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var w bytes.Buffer
			l := newAuditLog(&w, tt.format)
			l.line(now, eventAccessToken, "order-service", "prod", `wx"<x>`, "ok", "abcd0123", "127.0.0.1:4242")
			if err := l.stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			got := w.String()
			if tt.format == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(got), &m); err != nil {
					t.Fatalf("line %q is not JSON: %v", got, err)
				}
				if m["appid"] != `wx"<x>` {
					t.Errorf("appid decodes to %q", m["appid"])
				}
				got = strings.ReplaceAll(got, `\u003c`, "<")
				got = strings.ReplaceAll(got, `\u003e`, ">")
			}
			if got != tt.want {
				t.Errorf("line =\n%q\nwant\n%q", got, tt.want)
			}
			// After stop, lines are written through at once.
			w.Reset()
			l.line(now, eventTicket, "c", "prod", "wx", "ok", "", "r")
			if !strings.Contains(w.String(), "ticket") {
				t.Errorf("line after stop not written: %q", w.String())
			}
		})
	}
}

// TestAuditLogBackpressure fills the buffer beyond its bound with a writer
// that blocks, and checks that writers wait (memory stays bounded) and that
// every line arrives once the writer is released.
func TestAuditLogBackpressure(t *testing.T) {
	release := make(chan struct{})
	w := &gatedWriter{gate: release}
	l := newAuditLog(w, "json")
	long := strings.Repeat("x", 1000)
	const lines = 3 * auditBufferMax / 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range lines {
			l.line(time.Now(), eventAccessToken, long, "prod", "wx", "ok", "", "r")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		pending := len(l.buf)
		l.mu.Unlock()
		if pending >= auditBufferMax {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffer never filled: %d bytes pending", pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("all lines were accepted while the writer was blocked")
	default:
	}
	l.mu.Lock()
	if c := cap(l.buf); c > 2*auditBufferMax {
		t.Errorf("buffer grew to %d bytes; want at most %d", c, 2*auditBufferMax)
	}
	l.mu.Unlock()
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers still blocked after the writer was released")
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	if got := bytes.Count(w.all(), []byte("\n")); got != lines {
		t.Errorf("%d lines written; want %d", got, lines)
	}
}

type gatedWriter struct {
	gate chan struct{}
	buf  bytes.Buffer
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	return w.buf.Write(p)
}

func (w *gatedWriter) all() []byte { return w.buf.Bytes() }

// TestTokenReadMemo checks that the memoized read answers exactly like the
// general encoder, and follows a new token and a changed expiry.
func TestTokenReadMemo(t *testing.T) {
	fake := newFake()
	a, err := New(Options{
		Tokens: fake, Config: testConfig(), Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()),
		AuditWriter: &bytes.Buffer{}, Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	read := func() string {
		req := httptest.NewRequest(http.MethodGet, tokenPath("prod", appA), nil)
		req.Header.Set("Authorization", "Bearer "+keyOrder)
		w := httptest.NewRecorder()
		a.Handler().ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return w.Body.String()
	}
	key := appKey{"prod", appA}
	for _, tok := range []broker.Token{
		fake.tokens[key],
		{AccessToken: "NEW-TOKEN", ExpiresAt: testNow.Add(time.Hour), Generation: 4},
		{AccessToken: "NEW-TOKEN", ExpiresAt: testNow.Add(5 * time.Minute), Generation: 4},
	} {
		fake.mu.Lock()
		fake.tokens[key] = tok
		fake.mu.Unlock()
		for range 2 {
			want := string(appendTokenJSON(nil, tok.AccessToken, tok.ExpiresAt, testNow, tok.Generation))
			if got := read(); got != want {
				t.Errorf("read = %s; want %s", got, want)
			}
		}
	}
}

// TestAuditReadLine checks that a token read's line, whose fields come from
// the per-client memo (linePrefixed), is exactly the line the general
// encoder writes, in both formats, for every client and app it was memoized
// for.
func TestAuditReadLine(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	for _, format := range []string{"json", "console"} {
		t.Run(format, func(t *testing.T) {
			var want, got bytes.Buffer
			general, memo := newAuditLog(&want, format), newAuditLog(&got, format)
			cl := &client{name: "order-service"}
			for _, ai := range []*appInfo{{ns: "prod", appid: appA}, {ns: "staging", appid: `wx"<x>`}, {ns: "prod", appid: appA}} {
				for range 2 {
					general.line(now, eventAccessToken, cl.name, ai.ns, ai.appid, metrics.RequestOK, "abcd0123", "127.0.0.1:4242")
					memo.linePrefixed(now, cl.auditFields(memo, ai), "abcd0123", "127.0.0.1:4242")
				}
			}
			if err := errors.Join(general.stop(), memo.stop()); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("memoized lines =\n%s\nwant\n%s", got.String(), want.String())
			}
		})
	}
}
