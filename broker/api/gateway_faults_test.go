package api

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// upstream is a scripted WeChat: it counts requests and answers with fn.
type upstream struct {
	*httptest.Server
	n      atomic.Int64
	tokens sync.Map // access_token values seen
}

func newUpstream(t *testing.T, fn func(w http.ResponseWriter, r *http.Request, body []byte)) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.n.Add(1)
		u.tokens.Store(r.URL.Query().Get("access_token"), true)
		body, _ := io.ReadAll(r.Body)
		fn(w, r, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func answerJSON(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	_, _ = io.WriteString(w, s)
}

// gatewayHarness is an API over the fake TokenSource whose gateway sends to
// the given base URLs.
func gatewayHarness(t *testing.T, mod func(*config.Gateway), bases ...string) (string, *fakeTokens, *metrics.Metrics) {
	t.Helper()
	cfg := testConfig()
	cfg.WeChat.BaseURL = bases[0]
	cfg.WeChat.FallbackURLs = bases[1:]
	cfg.Gateway.Timeout = 10 * time.Second
	if mod != nil {
		mod(&cfg.Gateway)
	}
	fake := newFake()
	m := metrics.New(prometheus.NewRegistry())
	a, err := New(Options{Tokens: fake, Config: cfg, Logger: zap.NewNop(), Metrics: m, AuditWriter: io.Discard, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, fake, m
}

func gwPost(t *testing.T, u string, body io.Reader, contentLength int64) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, body)
	if contentLength != 0 {
		req.ContentLength = contentLength
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// closedURL is a loopback URL nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func TestGatewayFallbackOnConnectionFailure(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.URL.Path != "/wx/cgi-bin/message/custom/send" {
			answerJSON(w, `{"errcode":404,"errmsg":"path `+r.URL.Path+`"}`)
			return
		}
		answerJSON(w, `{"errcode":0,"errmsg":"ok"}`)
	})
	// The fallback carries a path prefix: it is kept.
	gw, _, _ := gatewayHarness(t, nil, closedURL(t), up.URL+"/wx/")
	st, b := gwPost(t, gw+"/cgi-bin/message/custom/send?access_token="+tokenA, strings.NewReader(`{"touser":"o"}`), 0)
	if st != 200 || !strings.Contains(string(b), `"errcode":0`) || up.n.Load() != 1 {
		t.Fatalf("via the fallback = %d %s, fallback saw %d; want the fallback's answer", st, b, up.n.Load())
	}
}

func TestGatewayNoRetryAfterUnknownOutcome(t *testing.T) {
	// WeChat reads the request, then the connection drops: it may have
	// processed it, so neither a retry nor a fallback may send it again.
	drop := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	fallback := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { answerJSON(w, `{"errcode":0}`) })
	gw, fake, _ := gatewayHarness(t, nil, drop.URL, fallback.URL)
	st, b := gwPost(t, gw+"/cgi-bin/message/custom/send?access_token="+tokenA, strings.NewReader(`{"touser":"o"}`), 0)
	v := wxAnswer(t, "dropped", st, b)
	if errcode(v) != -1 {
		t.Errorf("answer after a dropped connection = %s; want errcode -1", b)
	}
	if drop.n.Load() != 1 || fallback.n.Load() != 0 {
		t.Errorf("sends: base %d, fallback %d; want 1 and 0", drop.n.Load(), fallback.n.Load())
	}
	if len(fake.invalidated) != 0 {
		t.Errorf("reported %v; an unknown outcome is no token failure", fake.invalidated)
	}
}

func TestGatewayRetriesOnceOnly(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		answerJSON(w, `{"errcode":40001,"errmsg":"invalid credential rid: x"}`)
	})
	gw, fake, m := gatewayHarness(t, nil, up.URL)
	st, b := gwPost(t, gw+"/cgi-bin/message/custom/send?access_token="+tokenA, strings.NewReader(`{"touser":"o"}`), 0)
	if v := wxAnswer(t, "40001 twice", st, b); errcode(v) != 40001 {
		t.Errorf("answer = %s; want WeChat's 40001 passed on", b)
	}
	if up.n.Load() != 2 {
		t.Errorf("WeChat saw %d sends; want 2 (never a second retry)", up.n.Load())
	}
	if _, ok := up.tokens.Load(tokenA + "-next"); !ok {
		t.Error("the retry did not carry the new token")
	}
	// A caller with a token, not a client key: the report is refreshed only
	// if the broker's check confirms it.
	if len(fake.invalidated) != 1 || !strings.HasSuffix(fake.invalidated[0], tokenA+" proxy confirm") {
		t.Errorf("reports = %v; want one of %s from the proxy, to be confirmed", fake.invalidated, tokenA)
	}
	if got := testutil.ToFloat64(m.Gateway.Retries.WithLabelValues("prod", appA, metrics.RetryFailed)); got != 1 {
		t.Errorf("retries{failed} = %v; want 1", got)
	}
}

func TestGatewayLargeBodyReportedNotResent(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		answerJSON(w, `{"errcode":42001,"errmsg":"access_token expired"}`)
	})
	gw, fake, m := gatewayHarness(t, func(g *config.Gateway) { g.RetryBodyBytes = 1024 }, up.URL)
	body := bytes.Repeat([]byte("x"), 4096)
	for _, cl := range []int64{4096, -1} { // with and without Content-Length
		fake.mu.Lock()
		fake.invalidated = nil
		fake.tokens[appKey{"prod", appA}] = newFake().tokens[appKey{"prod", appA}]
		fake.mu.Unlock()
		before := up.n.Load()
		st, b := gwPost(t, gw+"/cgi-bin/media/upload?type=image&access_token="+tokenA, bytes.NewReader(body), cl)
		if v := wxAnswer(t, "large body", st, b); errcode(v) != 42001 {
			t.Errorf("Content-Length %d: answer = %s; want 42001 passed on", cl, b)
		}
		if n := up.n.Load() - before; n != 1 {
			t.Errorf("Content-Length %d: WeChat saw %d sends; a body over retry_body_bytes is never re-sent", cl, n)
		}
		if len(fake.invalidated) != 1 {
			t.Errorf("Content-Length %d: reports = %v; want the token reported all the same", cl, fake.invalidated)
		}
	}
	if got := testutil.ToFloat64(m.Gateway.Retries.WithLabelValues("prod", appA, metrics.RetryNotReplayable)); got != 2 {
		t.Errorf("retries{not_replayable} = %v; want 2", got)
	}
}

func TestGatewayLimits(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		answerJSON(w, `{"errcode":0}`)
	})
	gw, _, _ := gatewayHarness(t, func(g *config.Gateway) { g.MaxBodyBytes = 1000; g.RetryBodyBytes = 500; g.MaxConcurrent = 1 }, up.URL)
	// A declared oversize body never leaves; a chunked one is cut off
	// after max_body_bytes (WeChat gets an unterminated request).
	for _, cl := range []int64{2000, -1} {
		st, b := gwPost(t, gw+"/cgi-bin/media/upload?access_token="+tokenA, bytes.NewReader(make([]byte, 2000)), cl)
		if v := wxAnswer(t, "too large", st, b); errcode(v) != 45002 {
			t.Errorf("Content-Length %d: a body over max_body_bytes = %s; want 45002", cl, b)
		}
		if cl > 0 && up.n.Load() != 0 {
			t.Errorf("WeChat saw %d declared oversize bodies", up.n.Load())
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		gwPost(t, gw+"/slow?access_token="+tokenA, strings.NewReader("{}"), 0)
	}()
	<-entered
	st, b := gwPost(t, gw+"/cgi-bin/menu/get?access_token="+tokenA, nil, 0)
	if v := wxAnswer(t, "busy", st, b); errcode(v) != -1 || !strings.Contains(string(b), "max_concurrent") {
		t.Errorf("a request over max_concurrent = %s; want -1 busy", b)
	}
	close(release)
	<-done
}

func TestGatewayStreamsNonJSONUntouched(t *testing.T) {
	img := append([]byte("\x89PNG\r\n\x1a\n"), []byte(`{"errcode":40001}`)...)
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(img)
	})
	gw, fake, _ := gatewayHarness(t, nil, up.URL)
	st, b := gwPost(t, gw+"/wxa/getwxacodeunlimit?access_token="+tokenA, strings.NewReader(`{"scene":"a"}`), 0)
	if st != 200 || !bytes.Equal(b, img) || up.n.Load() != 1 || len(fake.invalidated) != 0 {
		t.Errorf("image = %d %q, %d sends, reports %v; want the bytes untouched, one send, no report", st, b, up.n.Load(), fake.invalidated)
	}
}

func TestGatewayPassesOnHTTPErrors(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>502</html>")
	})
	gw, _, m := gatewayHarness(t, nil, up.URL)
	st, b := gwPost(t, gw+"/cgi-bin/menu/get?access_token="+tokenA, nil, 0)
	if st != http.StatusBadGateway || string(b) != "<html>502</html>" {
		t.Errorf("answer = %d %q; want WeChat's 502 passed on", st, b)
	}
	if got := testutil.ToFloat64(m.Gateway.Requests.WithLabelValues("prod", appA, "/cgi-bin/menu/get", metrics.GatewayHTTPError, "0")); got != 1 {
		t.Errorf(`requests{result="http_error"} = %v; want 1`, got)
	}
}

// TestGatewayUserTokenAPIsSayWhatIsNeeded (issue 14, item 6): a /sns/ API
// that takes a user's OAuth token, called without a client key, is refused
// in WeChat's shape with what it needs — the user's OAuth access_token, and
// Authorization: Bearer plus X-Wxbroker-App — not "access_token missing"
// when an access_token was sent.
func TestGatewayUserTokenAPIsSayWhatIsNeeded(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { answerJSON(w, `{"errcode":0}`) })
	gw, _, _ := gatewayHarness(t, nil, up.URL)
	for _, c := range []struct {
		name, query string
		want        int
	}{
		{"with a user's access_token", "?access_token=USER-OAUTH-TOKEN-1234&openid=o1", 48001},
		{"with a token wxbroker handed out", "?access_token=" + tokenA + "&openid=o1", 48001},
		{"without access_token", "?openid=o1", 41001},
	} {
		resp, err := http.Get(gw + "/sns/userinfo" + c.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		v := wxAnswer(t, c.name, resp.StatusCode, b)
		msg, _ := v["errmsg"].(string)
		if errcode(v) != c.want {
			t.Errorf("%s: %s; want errcode %d", c.name, b, c.want)
		}
		for _, need := range []string{"OAuth access_token", "Authorization: Bearer", appHeader} {
			if !strings.Contains(msg, need) {
				t.Errorf("%s: errmsg %q does not name %q", c.name, msg, need)
			}
		}
		if c.want != 41001 && strings.Contains(msg, "missing") {
			t.Errorf("%s: errmsg %q says something is missing; an access_token was sent", c.name, msg)
		}
	}
	if n := up.n.Load(); n != 0 {
		t.Errorf("%d requests reached WeChat; want none", n)
	}
}
