package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
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
	a := e.start("a", pauseBeforeWrite(part, &armed, paused, resume))
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
		raw, err := rdb.HGet(context.Background(), a.b.store.keys.tok(testNS), a.b.catalog().items[0].field).Result()
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

// stuckRenewals makes one client's leader-lock renewals hang while on,
// ignoring their context: a Redis call that never returns.
type stuckRenewals struct {
	lockKey string
	on      atomic.Bool
	stuck   chan struct{} // closed when the first renewal hangs
	release chan struct{} // closed to let hung renewals go on
	once    sync.Once
	unonce  sync.Once
}

func newStuckRenewals(lockKey string) *stuckRenewals {
	return &stuckRenewals{lockKey: lockKey, stuck: make(chan struct{}), release: make(chan struct{})}
}

func (h *stuckRenewals) unblock() { h.unonce.Do(func() { close(h.release) }) }

// isRenewal recognises bsm/redislock's refresh script: EVALSHA sha 1 <lock>
// <value> <ttl> (obtain has one argument more, release and pttl one less;
// the fenced scripts name more keys).
func (h *stuckRenewals) isRenewal(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	return (name == "evalsha" || name == "eval") && len(args) == 6 &&
		fmt.Sprint(args[2]) == "1" && fmt.Sprint(args[3]) == h.lockKey
}

func (h *stuckRenewals) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stuckRenewals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() && h.isRenewal(cmd) {
			h.once.Do(func() { close(h.stuck) })
			<-h.release
		}
		return next(ctx, cmd)
	}
}

func (h *stuckRenewals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLeaseDeadline (invariant 1): a renewal that hangs in Redis does not keep a
// leader alive. Once less lease is left than WeChat's timeout, no credential
// call starts; at the local deadline the leader context is cancelled.
func TestLeaseDeadline(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Leader = config.Leader{LockTTL: 2 * time.Second, RenewInterval: 400 * time.Millisecond}
	cfg.WeChat.Timeout = 600 * time.Millisecond
	e := newEnv(t, wechattest.Options{}, cfg)
	h := newStuckRenewals(newKeys(cfg.Redis.KeyPrefix).lock())
	n := e.start("a", func(n *node, _ *redis.Options) { n.hook = h })
	t.Cleanup(h.unblock) // runs before the node stops (cleanups run last first)
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	tm := n.b.el.term.Load()

	h.on.Store(true)
	select {
	case <-h.stuck:
	case <-time.After(3 * time.Second):
		t.Fatal("no lock renewal reached Redis")
	}
	deadline := time.Now().Add(tm.lease.remaining())
	waitFor(t, 3*time.Second, "less lease left than the WeChat timeout", func() bool {
		return tm.lease.remaining() < cfg.WeChat.Timeout*3/4
	})
	calls := e.sim.Calls(wechat.APIToken, app.AppID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	cancel()
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - calls; got != 0 {
		t.Errorf("with %s of lease left (under the %s WeChat timeout) the leader made %d token calls; want 0 (Invalidate: %v)",
			tm.lease.remaining(), cfg.WeChat.Timeout, got, err)
	}
	select {
	case <-tm.ctx.Done():
	case <-time.After(time.Until(deadline) + time.Second):
		t.Fatalf("the leader context is still live %s after the local lease deadline", time.Since(deadline))
	}
	if cause := context.Cause(tm.ctx); !errors.Is(cause, errLeaseExpired) {
		t.Errorf("term ended by %v; want the lease deadline", cause)
	}
}

// TestFailedRenewalEndsTermAtOnce (invariant 1): a failed renewal cancels the
// leader context right away, long before the local lease deadline.
func TestFailedRenewalEndsTermAtOnce(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Leader = config.Leader{LockTTL: 4 * time.Second, RenewInterval: 300 * time.Millisecond}
	e := newEnv(t, wechattest.Options{}, cfg)
	part := &partition{}
	n := e.start("a", func(n *node, _ *redis.Options) { n.hook = part })
	leader(t, 5*time.Second, n)
	token(t, n, app.AppID)
	tm := n.b.el.term.Load()
	part.on.Store(true)
	// The next renewal (within renew_interval) fails; the lease would last
	// 3.6 s more.
	select {
	case <-tm.ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatalf("the leader context is live 2s after its renewals began failing (lease left %s)", tm.lease.remaining())
	}
	if cause := context.Cause(tm.ctx); errors.Is(cause, errLeaseExpired) {
		t.Errorf("term ended by %v; want the failed renewal", cause)
	}
	if n.b.IsLeader() {
		t.Error("IsLeader() = true after the renewal failed")
	}
}

// pauseBeforeWrite adds hook part to the node's Redis client and, once armed,
// stops the node's next token write before it reaches Redis: it closes
// paused and waits for resume.
func pauseBeforeWrite(part redis.Hook, armed *atomic.Bool, paused, resume chan struct{}) nodeOpt {
	return func(n *node, _ *redis.Options) {
		n.hook = part
		n.setup = func(b *Broker) {
			b.hooks.beforeWrite = func(*item) {
				if armed.CompareAndSwap(true, false) {
					close(paused)
					<-resume
				}
			}
		}
	}
}
