package wechattest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/clocktest"
)

const (
	testApp    = "wx0000000000000001"
	testSecret = "secret-one"
	otherApp   = "wx0000000000000002"
	otherSec   = "secret-two"
)

// newTest starts a simulator with a manual clock at 2025-03-10 12:00 UTC+8
// and two apps.
func newTest(t *testing.T, opts Options) (*Server, *clocktest.Clock) {
	t.Helper()
	clk := clocktest.New(time.Date(2025, 3, 10, 4, 0, 0, 0, time.UTC))
	opts.Now = clk.Now
	srv := NewServer(opts)
	t.Cleanup(srv.Close)
	srv.AddApp(testApp, testSecret)
	srv.AddApp(otherApp, otherSec)
	return srv, clk
}

// reply is a decoded WeChat answer.
type reply map[string]any

func (r reply) errcode() int {
	if v, ok := r["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (r reply) str(k string) string {
	v, _ := r[k].(string)
	return v
}

func (r reply) num(k string) int {
	v, _ := r[k].(float64)
	return int(v)
}

func decode(t *testing.T, resp *http.Response) reply {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d, body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, b)
	}
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s %s: invalid JSON %q: %v", resp.Request.Method, resp.Request.URL.Path, b, err)
	}
	return r
}

func get(t *testing.T, base, path string, q url.Values) reply {
	t.Helper()
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return decode(t, resp)
}

func post(t *testing.T, base, path string, q url.Values, body any) reply {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := http.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return decode(t, resp)
}

// classic fetches a classic token and fails the test on an errcode.
func classic(t *testing.T, srv *Server, appID, secret string) string {
	t.Helper()
	r := classicReply(t, srv, appID, secret)
	if r.errcode() != 0 || r.str("access_token") == "" {
		t.Fatalf("classic token: %v", r)
	}
	return r.str("access_token")
}

func classicReply(t *testing.T, srv *Server, appID, secret string) reply {
	t.Helper()
	return get(t, srv.URL, "/cgi-bin/token", url.Values{
		"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret},
	})
}

func stable(t *testing.T, srv *Server, appID, secret string, force bool) reply {
	t.Helper()
	return post(t, srv.URL, "/cgi-bin/stable_token", nil, map[string]any{
		"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": force,
	})
}

// useToken uses tok on the generic API and returns the errcode.
func useToken(t *testing.T, srv *Server, tok string) int {
	t.Helper()
	return post(t, srv.URL, "/cgi-bin/message/custom/send", url.Values{"access_token": {tok}},
		map[string]any{"touser": "x"}).errcode()
}

// wantCode fails the test when r does not carry errcode want, or when an
// error answer lacks WeChat's "rid: " suffix.
func wantCode(t *testing.T, what string, r reply, want int) {
	t.Helper()
	if got := r.errcode(); got != want {
		t.Fatalf("%s: errcode %d (%v); want %d", what, got, r, want)
	}
	if want != 0 && !strings.Contains(r.str("errmsg"), " rid: ") {
		t.Fatalf("%s: errmsg %q has no rid", what, r.str("errmsg"))
	}
}
