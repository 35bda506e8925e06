package broker

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

var errPartitioned = errors.New("test: partitioned from redis")

// partition fails every Redis command of one client while on.
type partition struct{ on atomic.Bool }

func (p *partition) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if p.on.Load() {
			return nil, errPartitioned
		}
		return next(ctx, network, addr)
	}
}

func (p *partition) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if p.on.Load() {
			cmd.SetErr(errPartitioned)
			return errPartitioned
		}
		return next(ctx, cmd)
	}
}

func (p *partition) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if p.on.Load() {
			for _, c := range cmds {
				c.SetErr(errPartitioned)
			}
			return errPartitioned
		}
		return next(ctx, cmds)
	}
}

// TestPausedLeaderIsFenced: a leader stalls between its WeChat call and its
// write while its renewals fail past the lock TTL; another replica takes
// over. When the stalled leader wakes up it makes no credential call and its
// write does not land: the script rejects it and it is counted.
func TestPausedLeaderIsFenced(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)

	part := &partition{}
	var armed atomic.Bool
	paused := make(chan struct{})
	resume := make(chan struct{})
	a := e.start("a", func(n *node, _ *redis.Options) {
		n.hook = part
		n.setup = func(b *Broker) {
			b.hooks.beforeWrite = func(it *item) {
				if armed.CompareAndSwap(true, false) {
					close(paused)
					<-resume
				}
			}
		}
	})
	leader(t, 5*time.Second, a)
	failed := token(t, a, app.AppID)
	bn := e.start("b")
	token(t, bn, app.AppID)

	armed.Store(true)
	invalidated := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := a.b.Invalidate(ctx, testNS, app.AppID, failed.AccessToken, metrics.SourceClient)
		invalidated <- err
	}()
	select {
	case <-paused:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader never reached its write")
	}
	part.on.Store(true) // renewals fail from now on
	waitFor(t, 3*time.Second, "the stalled leader to step down", func() bool { return !a.b.IsLeader() })
	callsAfterLoss := a.wx.total()
	leader(t, cfg.Leader.LockTTL+2*time.Second, a, bn)
	if !bn.b.IsLeader() {
		t.Fatal("b did not take over")
	}
	fetched := *a.wx.last.Load() // the token the stalled leader holds, not yet written
	rdb := e.redis.Client(t)
	stored := func() string {
		raw, err := rdb.HGet(context.Background(), a.b.store.keys.tok(testNS), a.b.items[0].field).Result()
		if err != nil {
			t.Fatal(err)
		}
		r, err := parseRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		return r.Value
	}

	part.on.Store(false)
	close(resume) // the stalled leader wakes up and tries to write
	waitFor(t, 3*time.Second, "the fenced write to be rejected", func() bool {
		return testutil.ToFloat64(a.m.FencedWritesRejected) >= 1
	})
	if stored() == fetched {
		t.Error("the deposed leader's write landed")
	}
	select {
	case <-invalidated:
	case <-time.After(10 * time.Second):
		t.Fatal("Invalidate on the deposed leader never returned")
	}
	// The deposed leader's report was handed to b: b is the only caller now.
	if got := a.wx.total(); got != callsAfterLoss {
		t.Errorf("the deposed leader made %d credential calls after losing the lease", got-callsAfterLoss)
	}
	if a.b.IsLeader() {
		t.Error("the deposed leader leads again while b holds the lock")
	}
	if stored() == fetched {
		t.Error("the deposed leader's token was stored")
	}
	if got := testutil.ToFloat64(a.m.LeaderTransitions); got < 2 {
		t.Errorf("leader transitions on a = %v; want at least 2", got)
	}
}
