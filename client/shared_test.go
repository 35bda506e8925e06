package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// When the broker may not refresh (429), the Transport hands back WeChat's
// own 40001 answer, body intact, instead of an error.
func TestTransportReturnsWeChatAnswerOn429(t *testing.T) {
	var invalidates atomic.Int64
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/invalidate") {
			invalidates.Add(1)
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"too_many_requests","message":"forced refresh budget for this app is used up"}}`)
			return
		}
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		fmt.Fprintf(w, `{"access_token":"tok-0","expires_in":3600,"expires_at":%q,"generation":1}`, exp)
	}))
	defer broker.Close()
	const answer = `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 1"}`
	var calls atomic.Int64
	wechat := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json; encoding=utf-8")
		fmt.Fprint(w, answer)
	}))
	defer wechat.Close()

	c := newClient(t, broker.URL)
	hc := &http.Client{Transport: c.Transport("wx0000000000000001", nil)}
	resp, err := hc.Get(wechat.URL + "/cgi-bin/menu/get")
	if err != nil {
		t.Fatalf("Get through the Transport: %v; want WeChat's answer", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != answer {
		t.Fatalf("body = %q, %v; want WeChat's original %q", body, err, answer)
	}
	if calls.Load() != 1 || invalidates.Load() != 1 {
		t.Errorf("wechat calls = %d, invalidations = %d; want 1 and 1 (no retry without a new token)", calls.Load(), invalidates.Load())
	}
}

// One caller's cancelled context does not fail the others sharing its read.
func TestCancelledCallerDoesNotFailOthers(t *testing.T) {
	release := make(chan struct{})
	var reads atomic.Int64
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reads.Add(1)
		<-release
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		fmt.Fprintf(w, `{"access_token":"tok-0","expires_in":3600,"expires_at":%q,"generation":1}`, exp)
	}))
	defer broker.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	c := newClient(t, broker.URL)

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.AccessToken(ctx, "wx0000000000000001")
		first <- err
	}()
	// Wait until the shared read is at the broker, then join it.
	for reads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan string, 1)
	secondErr := make(chan error, 1)
	go func() {
		tok, err := c.AccessToken(context.Background(), "wx0000000000000001")
		second <- tok
		secondErr <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v; want context.Canceled", err)
	}
	close(release)
	if tok, err := <-second, <-secondErr; err != nil || tok != "tok-0" {
		t.Fatalf("other caller got %q, %v; want tok-0", tok, err)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("broker reads = %d; want 1 shared read", n)
	}
	// The shared answer was cached for later callers.
	if tok, err := c.AccessToken(context.Background(), "wx0000000000000001"); err != nil || tok != "tok-0" || reads.Load() != 1 {
		t.Errorf("later read = %q, %v after %d broker reads; want the cached tok-0", tok, err, reads.Load())
	}
}
