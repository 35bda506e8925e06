package broker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/internal/redistest"
)

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestReadsNeverTouchRedis (invariant 9): token, ticket and token-lookup reads are
// answered from the in-process cache without a single Redis command.
func TestReadsNeverTouchRedis(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	cfg := testConfig(t, classicApp(1, "jsapi"))
	b := idleBroker(t, cfg, rdb)
	f := leadership(t, b, rdb, "a")
	now := time.Now()
	e := b.catalog().apps[testNS][appID(1)]
	ctx := context.Background()
	if _, err := testWrite(ctx, b, f, e.token, "tok-1", now.Add(time.Hour), now, "", false, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := testWrite(ctx, b, f, e.tickets["jsapi"], "ticket-1", now.Add(time.Hour), now, shortHash("tok-1"), false, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.rep.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h := &countingHook{}
	rdb.AddHook(h)
	for range 100 {
		if tok, err := b.AccessToken(testNS, appID(1)); err != nil || tok.AccessToken != "tok-1" {
			t.Fatalf("AccessToken = %+v, %v", tok, err)
		}
		if tk, err := b.Ticket(testNS, appID(1), "jsapi"); err != nil || tk.Ticket != "ticket-1" {
			t.Fatalf("Ticket = %+v, %v", tk, err)
		}
		if _, _, ok := b.AppByToken("tok-1"); !ok {
			t.Fatal("AppByToken(current) = false")
		}
		if err := b.Ready(); err != nil {
			t.Fatalf("Ready() = %v", err)
		}
	}
	if got := h.n.Load(); got != 0 {
		t.Errorf("400 reads sent %d Redis commands; want 0", got)
	}
}
