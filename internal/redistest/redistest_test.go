package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/redistest"
)

func TestStopStartKeepsAddress(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	s.Stop()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := c.Ping(short).Err(); err == nil {
		t.Fatal("PING after Stop succeeded; want an error")
	}
	s.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

func TestSentinelKnowsMaster(t *testing.T) {
	m := redistest.Start(t, "--requirepass", "pw")
	sn := redistest.StartSentinel(t, m, "mymaster")
	if sn.Addr == "" {
		t.Fatal("sentinel has no address")
	}
}
