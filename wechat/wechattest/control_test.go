package wechattest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// control calls a /sim/ endpoint and decodes its JSON answer.
func control(t *testing.T, srv *Server, method, path string, body any, wantStatus int) map[string]any {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: invalid JSON: %v", method, path, err)
	}
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: status %d (%v); want %d", method, path, resp.StatusCode, out, wantStatus)
	}
	return out
}

func TestControlEndpoints(t *testing.T) {
	srv := NewServer(Options{})
	t.Cleanup(srv.Close)

	control(t, srv, "POST", "/sim/apps", map[string]any{"appid": "wxctl", "secret": "s3"}, 200)
	control(t, srv, "POST", "/sim/apps", map[string]any{"appid": "wxctl"}, 400)
	tok := classic(t, srv, "wxctl", "s3")

	out := control(t, srv, "GET", "/sim/token_valid?"+url.Values{"appid": {"wxctl"}, "token": {tok}}.Encode(), nil, 200)
	if out["valid"] != true {
		t.Fatalf("token_valid = %v; want true", out)
	}
	out = control(t, srv, "GET", "/sim/token_valid?appid=wxctl&token=nope", nil, 200)
	if out["valid"] != false {
		t.Fatalf("token_valid(nope) = %v; want false", out)
	}

	code, _ := control(t, srv, "POST", "/sim/codes/login", map[string]any{"appid": "wxctl", "person": "p1"}, 200)["code"].(string)
	r := code2session(t, srv, "wxctl", "s3", code)
	wantCode(t, "control login code", r, 0)
	ids := control(t, srv, "GET", "/sim/ids?appid=wxctl&person=p1", nil, 200)
	if ids["openid"] != r.str("openid") || ids["unionid"] != r.str("unionid") {
		t.Fatalf("ids = %v; jscode2session = %v", ids, r)
	}
	risky, _ := control(t, srv, "POST", "/sim/codes/login", map[string]any{"appid": "wxctl", "person": "p2", "risky": true}, 200)["code"].(string)
	wantCode(t, "control risky code", code2session(t, srv, "wxctl", "s3", risky), 40226)

	phone, _ := control(t, srv, "POST", "/sim/codes/phone", map[string]any{"appid": "wxctl", "phone": "13900000000"}, 200)["code"].(string)
	pr := post(t, srv.URL, "/wxa/business/getuserphonenumber", url.Values{"access_token": {tok}}, map[string]string{"code": phone})
	wantCode(t, "control phone code", pr, 0)
	oauth, _ := control(t, srv, "POST", "/sim/codes/oauth", map[string]any{"appid": "wxctl", "person": "p1"}, 200)["code"].(string)
	or := get(t, srv.URL, "/sns/oauth2/access_token", url.Values{"appid": {"wxctl"}, "secret": {"s3"}, "code": {oauth}, "grant_type": {"authorization_code"}})
	wantCode(t, "control oauth code", or, 0)

	control(t, srv, "POST", "/sim/faults", map[string]any{"api": "token", "n": 2, "errcode": -1}, 200)
	control(t, srv, "POST", "/sim/faults", map[string]any{"api": "nope"}, 400)
	wantCode(t, "faulted 1", classicReply(t, srv, "wxctl", "s3"), -1)
	wantCode(t, "faulted 2", classicReply(t, srv, "wxctl", "s3"), -1)
	classic(t, srv, "wxctl", "s3")
	control(t, srv, "POST", "/sim/faults", map[string]any{"api": "token", "status": 503}, 200)
	control(t, srv, "DELETE", "/sim/faults", nil, 200)
	classic(t, srv, "wxctl", "s3")

	st := control(t, srv, "GET", "/sim/stats", nil, 200)
	calls, _ := st["calls"].(map[string]any)
	tokenCalls, _ := calls["token"].(map[string]any)
	tokens, _ := st["tokens"].(map[string]any)
	answered, _ := st["answered"].(map[string]any)
	if tokenCalls["wxctl"] != 5.0 || tokens["wxctl"] != 3.0 || answered["-1"] != 2.0 || answered["40226"] != 1.0 {
		t.Fatalf("stats = %v", st)
	}
	control(t, srv, "POST", "/sim/reset", nil, 200)
	st = control(t, srv, "GET", "/sim/stats", nil, 200)
	if c, _ := st["calls"].(map[string]any); len(c) != 0 {
		t.Fatalf("stats after reset = %v", st)
	}
	control(t, srv, "GET", "/sim/nope", nil, 404)
	// Apps survive a reset.
	classic(t, srv, "wxctl", "s3")
}

func TestStats(t *testing.T) {
	srv, _ := newTest(t, Options{})
	tok := classic(t, srv, testApp, testSecret)
	classicReply(t, srv, testApp, "wrong")
	stable(t, srv, testApp, testSecret, false)
	stable(t, srv, testApp, testSecret, false)
	useToken(t, srv, tok)
	useToken(t, srv, "bogus")
	srv.Fail(apiGeneric, 1, Fault{Errcode: 40001})
	useToken(t, srv, tok)
	for _, tc := range []struct {
		name string
		got  int
		want int
	}{
		{"Calls(token, app)", srv.Calls(apiToken, testApp), 2},
		{"Calls(stable_token, app)", srv.Calls(apiStableToken, testApp), 2},
		{"Calls(generic, app)", srv.Calls(apiGeneric, testApp), 2},
		{"Calls(generic, unknown token)", srv.Calls(apiGeneric, ""), 1},
		{"Calls(token, other app)", srv.Calls(apiToken, otherApp), 0},
		{"TokensIssued(app)", srv.TokensIssued(testApp), 2},
		{"Answered(40125)", srv.Answered(40125), 1},
		{"Answered(40014)", srv.Answered(40014), 1},
		{"Answered(40001)", srv.Answered(40001), 1},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d; want %d", tc.name, tc.got, tc.want)
		}
	}
	srv.Reset()
	if srv.Calls(apiToken, testApp) != 0 || srv.TokensIssued(testApp) != 0 || srv.Answered(40125) != 0 {
		t.Fatal("Reset left stats behind")
	}
	if !srv.TokenValid(testApp, tok) {
		t.Fatal("Reset invalidated a token")
	}
}

func TestUnknownPath(t *testing.T) {
	srv, _ := newTest(t, Options{})
	resp, err := http.Get(srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /nope: %d; want 404", resp.StatusCode)
	}
}

func TestConcurrentUse(t *testing.T) {
	srv, clk := newTest(t, Options{DailyQuota: 1000})
	const workers, fetches = 8, 10
	// fetchAndUse runs off the test goroutine, so it reports errors instead
	// of failing the test itself.
	fetchAndUse := func() error {
		resp, err := http.Get(tokenURL(srv))
		if err != nil {
			return err
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if err != nil || tok.AccessToken == "" {
			return fmt.Errorf("classic token: %w", err)
		}
		resp, err = http.Get(srv.URL + "/cgi-bin/menu/get?access_token=" + tok.AccessToken)
		if err != nil {
			return err
		}
		resp.Body.Close()
		body := strings.NewReader(`{"grant_type":"client_credential","appid":"` + testApp + `","secret":"` + testSecret + `"}`)
		resp, err = http.Post(srv.URL+"/cgi-bin/stable_token", "application/json", body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		clk.Advance(time.Second)
		return nil
	}
	errc := make(chan error, workers*fetches)
	for range workers {
		go func() {
			for range fetches {
				errc <- fetchAndUse()
			}
		}()
	}
	for range workers * fetches {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.Calls(apiToken, testApp); got != workers*fetches {
		t.Fatalf("Calls(token) = %d; want %d", got, workers*fetches)
	}
	if got := srv.Calls(apiGeneric, testApp); got != workers*fetches {
		t.Fatalf("Calls(generic) = %d; want %d", got, workers*fetches)
	}
	// Every classic fetch minted a token, plus exactly one stable token.
	if got := srv.TokensIssued(testApp); got != workers*fetches+1 {
		t.Fatalf("TokensIssued = %d; want %d", got, workers*fetches+1)
	}
	latest := classic(t, srv, testApp, testSecret)
	if !srv.TokenValid(testApp, latest) {
		t.Fatal("latest token is not valid")
	}
}

// TestControlTokenDeadAt: token_valid says when a token dies, so that an
// out-of-process checker can tell how long after its death a token was used.
func TestControlTokenDeadAt(t *testing.T) {
	srv := NewServer(Options{})
	t.Cleanup(srv.Close)
	control(t, srv, "POST", "/sim/apps", map[string]any{"appid": "wxctl", "secret": "s3"}, 200)
	tok := classic(t, srv, "wxctl", "s3")
	check := func() (map[string]any, time.Duration) {
		t.Helper()
		out := control(t, srv, "GET", "/sim/token_valid?"+url.Values{"appid": {"wxctl"}, "token": {tok}}.Encode(), nil, 200)
		s, _ := out["dead_at"].(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("token_valid = %v: dead_at: %v", out, err)
		}
		return out, time.Until(at)
	}
	// A fresh token dies at its expiry (default lifetime 7200 s) ...
	if out, d := check(); out["valid"] != true || d < 7100*time.Second || d > 7200*time.Second {
		t.Fatalf("fresh token: %v, dies in %s; want valid, about 7200s", out, d)
	}
	// ... until a newer fetch supersedes it: then after the overlap (300 s).
	classic(t, srv, "wxctl", "s3")
	if out, d := check(); out["valid"] != true || d < 200*time.Second || d > 300*time.Second {
		t.Fatalf("superseded token: %v, dies in %s; want valid for the 300s overlap", out, d)
	}
	out := control(t, srv, "GET", "/sim/token_valid?appid=wxctl&token=nope", nil, 200)
	if _, ok := out["dead_at"]; out["valid"] != false || ok {
		t.Fatalf("token_valid(nope) = %v; want false without dead_at", out)
	}
}
