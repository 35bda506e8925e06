package wechattest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// plainClient opens a new connection per request, so that net/http never
// retries a request on a reused connection the simulator dropped.
func plainClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

func tokenURL(srv *Server) string {
	return srv.URL + "/cgi-bin/token?" + url.Values{
		"grant_type": {"client_credential"}, "appid": {testApp}, "secret": {testSecret}}.Encode()
}

func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fault  Fault
		check  func(t *testing.T, resp *http.Response, body []byte, err error)
		minted int
	}{
		{
			name:  "status with an HTML body",
			fault: Fault{Status: http.StatusBadGateway},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
					!strings.Contains(string(body), "<html>") {
					t.Fatalf("status fault = %v, %v, %q", resp, err, body)
				}
			},
		},
		{
			name:  "invalid JSON",
			fault: Fault{InvalidJSON: true},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				var v any
				if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) == nil {
					t.Fatalf("invalid JSON fault = %v, %v, %q", resp, err, body)
				}
			},
		},
		{
			name:  "errcode",
			fault: Fault{Errcode: -1},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				var r reply
				if err != nil || json.Unmarshal(body, &r) != nil {
					t.Fatalf("errcode fault = %v, %q", err, body)
				}
				wantCode(t, "errcode fault", r, -1)
			},
		},
		{
			name:  "drop",
			fault: Fault{Drop: true},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err == nil {
					t.Fatalf("drop fault answered %d %q", resp.StatusCode, body)
				}
			},
		},
		{
			name:  "drop response",
			fault: Fault{DropResponse: true},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err == nil {
					t.Fatalf("drop-response fault answered %d %q", resp.StatusCode, body)
				}
			},
			minted: 1,
		},
		{
			name:  "latency",
			fault: Fault{Latency: 20 * time.Millisecond},
			check: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "access_token") {
					t.Fatalf("latency fault = %v, %q", err, body)
				}
			},
			minted: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newTest(t, Options{})
			srv.Fail(apiToken, 1, tc.fault)
			start := time.Now()
			resp, err := plainClient().Get(tokenURL(srv))
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if elapsed := time.Since(start); elapsed < tc.fault.Latency {
				t.Fatalf("answered after %v; want at least %v", elapsed, tc.fault.Latency)
			}
			tc.check(t, resp, body, err)
			if got := srv.TokensIssued(testApp); got != tc.minted {
				t.Fatalf("TokensIssued = %d; want %d", got, tc.minted)
			}
			if got := srv.Calls(apiToken, testApp); got != 1 {
				t.Fatalf("Calls = %d; want 1", got)
			}
			// The fault applied once; the next call is normal.
			classic(t, srv, testApp, testSecret)
		})
	}
}

func TestDropResponseSupersedes(t *testing.T) {
	srv, _ := newTest(t, Options{})
	a := classic(t, srv, testApp, testSecret)
	srv.Fail(apiToken, 1, Fault{DropResponse: true})
	if _, err := plainClient().Get(tokenURL(srv)); err == nil {
		t.Fatal("drop-response fault answered")
	}
	// The lost token superseded a: a lives only through the overlap, and the
	// next fetch kills it at once.
	if got := useToken(t, srv, a); got != 0 {
		t.Fatalf("token before the lost fetch: errcode %d; want 0 within the overlap", got)
	}
	classic(t, srv, testApp, testSecret)
	if got := useToken(t, srv, a); got != 40001 {
		t.Fatalf("token two fetches old: errcode %d; want 40001", got)
	}
}

func TestLatencyHonoursCancellation(t *testing.T) {
	srv, _ := newTest(t, Options{})
	srv.Fail(apiToken, 1, Fault{Latency: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tokenURL(srv), nil)
	_, err := plainClient().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request during a latency fault: %v; want a deadline error", err)
	}
	// The sleeping request holds no lock: the simulator keeps answering.
	classic(t, srv, testApp, testSecret)
	if got := srv.TokensIssued(testApp); got != 1 {
		t.Fatalf("TokensIssued = %d; want 1 (the cancelled call is not processed)", got)
	}
}

func TestCloseEndsLatency(t *testing.T) {
	srv, _ := newTest(t, Options{})
	srv.Fail(apiToken, 1, Fault{Latency: time.Hour})
	errc := make(chan error, 1)
	go func() {
		_, err := plainClient().Get(tokenURL(srv))
		errc <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Calls(apiToken, testApp) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the simulator")
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a request sleeping in a latency fault")
	}
	if err := <-errc; err == nil {
		t.Fatal("request in flight during Close got an answer")
	}
}

func TestFaultQueue(t *testing.T) {
	srv, _ := newTest(t, Options{})
	srv.Fail(apiStableToken, 2, Fault{Errcode: 45009})
	srv.Fail(apiStableToken, 1, Fault{Errcode: 40001})
	srv.Fail(apiToken, 0, Fault{Errcode: -1}) // n <= 0: ignored
	for i, want := range []int{45009, 45009, 40001, 0} {
		if got := stable(t, srv, testApp, testSecret, false).errcode(); got != want {
			t.Fatalf("stable call %d: errcode %d; want %d", i+1, got, want)
		}
	}
	classic(t, srv, testApp, testSecret)
	srv.Fail(apiGeneric, 5, Fault{Errcode: -1})
	srv.ClearFaults()
	tok := classic(t, srv, testApp, testSecret)
	if got := useToken(t, srv, tok); got != 0 {
		t.Fatalf("generic after ClearFaults: errcode %d; want 0", got)
	}
	if srv.Answered(45009) != 2 || srv.Answered(40001) != 1 {
		t.Fatalf("Answered(45009, 40001) = %d, %d; want 2, 1", srv.Answered(45009), srv.Answered(40001))
	}
}
