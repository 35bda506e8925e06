package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/client"
)

// fakeBroker serves the broker's token routes for one app with a current
// token that an invalidation replaces (conditionally, as the broker does).
type fakeBroker struct {
	mu          sync.Mutex
	gen         int
	reads       atomic.Int64
	invalidates atomic.Int64
}

func (f *fakeBroker) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("tok-%d", f.gen)
}

func (f *fakeBroker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer k1" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"unauthorized","message":"missing or unknown client key"}}`)
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/namespaces/prod/apps/wx0000000000000001/access_token") {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":{"code":"not_found","message":"unknown app"}}`)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/invalidate") {
		f.invalidates.Add(1)
		var body struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.mu.Lock()
		if body.AccessToken == fmt.Sprintf("tok-%d", f.gen) {
			f.gen++
		}
		f.mu.Unlock()
	} else {
		f.reads.Add(1)
	}
	f.mu.Lock()
	gen := f.gen
	f.mu.Unlock()
	exp := time.Now().Add(time.Hour).UTC()
	fmt.Fprintf(w, `{"access_token":"tok-%d","expires_in":3600,"expires_at":%q,"generation":%d}`, gen, exp.Format(time.RFC3339), gen)
}

func newClient(t *testing.T, url string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{BaseURL: url, Key: "k1", Namespace: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAccessTokenIsCached(t *testing.T) {
	fb := &fakeBroker{}
	srv := httptest.NewServer(fb)
	defer srv.Close()
	c := newClient(t, srv.URL)
	for range 5 {
		tok, err := c.AccessToken(t.Context(), "wx0000000000000001")
		if err != nil || tok != "tok-0" {
			t.Fatalf("AccessToken = %q, %v; want tok-0", tok, err)
		}
	}
	if n := fb.reads.Load(); n != 1 {
		t.Fatalf("broker reads = %d; want 1 (cached)", n)
	}
}

func TestBrokerErrorsAreTyped(t *testing.T) {
	fb := &fakeBroker{}
	srv := httptest.NewServer(fb)
	defer srv.Close()
	c := newClient(t, srv.URL)
	_, err := c.AccessToken(t.Context(), "wx00000000000000ff")
	var be *client.Error
	if !errors.As(err, &be) || be.Status != 404 || be.Code != "not_found" {
		t.Fatalf("AccessToken(unknown) error = %v; want *client.Error 404 not_found", err)
	}
}

func TestTransportRetriesOnceOn40001(t *testing.T) {
	fb := &fakeBroker{}
	broker := httptest.NewServer(fb)
	defer broker.Close()
	var calls atomic.Int64
	valid := func(tok string) bool { return tok == fb.current() }
	wechat := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if !valid(r.URL.Query().Get("access_token")) {
			fmt.Fprint(w, `{"errcode":40001,"errmsg":"invalid credential rid: x"}`)
			return
		}
		fmt.Fprint(w, `{"errcode":0,"errmsg":"ok"}`)
	}))
	defer wechat.Close()

	c := newClient(t, broker.URL)
	hc := &http.Client{Transport: c.Transport("wx0000000000000001", nil)}
	// Warm the cache with tok-0, then let "someone else" replace it so the
	// cached token is stale.
	if _, err := c.AccessToken(t.Context(), "wx0000000000000001"); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	fb.gen = 1
	fb.mu.Unlock()

	resp, err := hc.Post(wechat.URL+"/cgi-bin/message/custom/send", "application/json", strings.NewReader(`{"touser":"o1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Errcode int }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	// tok-0 is not current at the broker, so the conditional refresh replaces
	// nothing and hands back tok-1.
	if out.Errcode != 0 || calls.Load() != 2 || fb.invalidates.Load() != 1 {
		t.Fatalf("errcode=%d wechat calls=%d invalidates=%d; want 0, 2, 1", out.Errcode, calls.Load(), fb.invalidates.Load())
	}
	if fb.current() != "tok-1" {
		t.Fatalf("broker token = %s; a stale report must not refresh", fb.current())
	}
}

func TestTransportRetriesOnlyOnce(t *testing.T) {
	fb := &fakeBroker{}
	broker := httptest.NewServer(fb)
	defer broker.Close()
	var calls atomic.Int64
	wechat := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"errcode":42001,"errmsg":"access_token expired"}`)
	}))
	defer wechat.Close()
	c := newClient(t, broker.URL)
	hc := &http.Client{Transport: c.Transport("wx0000000000000001", nil)}
	resp, err := hc.Get(wechat.URL + "/cgi-bin/get_api_domain_ip")
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Errcode int }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Errcode != 42001 || calls.Load() != 2 {
		t.Fatalf("errcode=%d calls=%d; want the second 42001 handed back after exactly 2 calls", out.Errcode, calls.Load())
	}
}
