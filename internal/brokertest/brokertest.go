// Package brokertest runs a real broker.Broker inside the tests of the
// packages built on it (the HTTP API, the login endpoints, the commands).
package brokertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/broker"
)

// Run builds a broker from opts and runs it until the test ends: its cleanup
// cancels Run and waits for it to return. The test fails at once if New
// fails, and at the end if Run returns an error.
func Run(t testing.TB, opts broker.Options) *broker.Broker {
	t.Helper()
	b, err := broker.New(opts)
	if err != nil {
		t.Fatalf("brokertest: broker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("brokertest: Broker.Run = %v; want nil after cancel", err)
		}
	})
	return b
}

// WaitToken waits until b serves an access token for ns/appid, and fails the
// test if it does not within the given time.
func WaitToken(t testing.TB, b *broker.Broker, ns, appid string, within time.Duration) broker.Token {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		tok, err := b.AccessToken(ns, appid)
		if err == nil {
			return tok
		}
		if errors.Is(err, broker.ErrUnknownApp) || time.Now().After(deadline) {
			t.Fatalf("brokertest: no access token for %s/%s within %s: %v", ns, appid, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
