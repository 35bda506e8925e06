package broker

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// These tests cover what a new leader must take over from a previous term
// that died or from a Redis that lost data: the intent of a credential call
// without an outcome (invariant 3 unknown outcome, invariant 4 force budget), records Redis
// holds in an older version (invariant 8 reseed), and the epoch (invariant 2 fencing).

// storedRaw reads it's raw record from Redis ("" when missing).
func storedRaw(t *testing.T, rdb *redis.Client, b *Broker, it *item) string {
	t.Helper()
	raw, err := rdb.HGet(context.Background(), b.store.keys.tok(it.ns), it.field).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func storedValue(t *testing.T, rdb *redis.Client, b *Broker, it *item) string {
	t.Helper()
	r, err := parseRecord(storedRaw(t, rdb, b, it))
	if err != nil {
		return ""
	}
	return r.Value
}

// TestTakeoverAfterLeaderDiedDuringCall (invariant 3 unknown outcome across
// processes, invariant 4 force budget): the leader dies between WeChat minting a new
// classic token (a forced refresh) and storing it. The next leader finds the
// call's intent, treats the stored token as superseded and refreshes at once
// instead of serving the dead token until its scheduled refresh; the dead
// leader's force marker does not answer 429 to a report of the dead token.
func TestTakeoverAfterLeaderDiedDuringCall(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Refresh.ForceMinInterval = time.Hour // the dead leader's marker outlives the test
	const overlap = 300 * time.Millisecond
	e := newEnv(t, wechattest.Options{TokenTTL: time.Hour, Overlap: overlap}, cfg)

	part := &partition{}
	var armed atomic.Bool
	paused := make(chan struct{})
	resume := make(chan struct{})
	var resumeOnce sync.Once
	t.Cleanup(func() { resumeOnce.Do(func() { close(resume) }) })
	a := e.start("a", pauseBeforeWrite(part, &armed, paused, resume))
	leader(t, 5*time.Second, a)
	dead := token(t, a, app.AppID)
	bn := e.start("b")
	token(t, bn, app.AppID)

	armed.Store(true)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = a.b.Invalidate(ctx, testNS, app.AppID, dead.AccessToken, metrics.SourceClient)
	}()
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader never reached its write")
	}
	// WeChat minted the successor; the leader is "dead" from now on.
	part.on.Store(true)
	waitFor(t, 3*time.Second, "the superseded token to die at the simulator", func() bool {
		return !e.sim.TokenValid(app.AppID, dead.AccessToken)
	})
	calls := e.sim.Calls(wechat.APIToken, app.AppID)
	waitFor(t, 5*time.Second, "the partitioned leader to step down", func() bool { return !a.b.IsLeader() })
	leader(t, cfg.Leader.LockTTL+5*time.Second, a, bn)
	if !bn.b.IsLeader() {
		t.Fatal("b did not take over")
	}
	var fresh Token
	waitFor(t, 5*time.Second, "the new leader to replace the token the dead leader's call killed", func() bool {
		var err error
		fresh, err = bn.b.AccessToken(testNS, app.AppID)
		return err == nil && fresh.AccessToken != dead.AccessToken
	})
	if !e.sim.TokenValid(app.AppID, fresh.AccessToken) {
		t.Error("the new leader's token is not valid at the simulator")
	}
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - calls; got != 1 {
		t.Errorf("the new leader made %d token calls; want 1", got)
	}
	if !logged(bn.logs, zapcore.WarnLevel, "credential call left no outcome", app.AppID) {
		t.Error("no warning naming the app about the previous leader's unsettled call")
	}
	// A client still holding the dead token reports it: answered with the
	// current token, not 429 from the dead leader's force marker.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := bn.b.Invalidate(ctx, testNS, app.AppID, dead.AccessToken, metrics.SourceClient)
	if err != nil || got.AccessToken == dead.AccessToken {
		t.Errorf("Invalidate(dead token) after the takeover = generation %d, %v; want the current token", got.Generation, err)
	}
	rdb := e.redis.Client(t)
	if n, err := rdb.HLen(context.Background(), bn.b.store.keys.intent(testNS)).Result(); err != nil || n != 0 {
		t.Errorf("intents left after the new token was stored = %d, %v; want 0", n, err)
	}
}

// TestDeadLeaderForceMarker (invariant 4): the force marker of a term whose forced
// call left no outcome does not block the next leader; one whose call was
// stored does, and so does the current leader's own.
func TestDeadLeaderForceMarker(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	cfg := testConfig(t, classicApp(1))
	cfg.Refresh.ForceMinInterval = time.Hour
	b := idleBroker(t, cfg, rdb)
	ctx := t.Context()
	it := b.catalog().items[0]
	now := time.Now()

	dead := leadership(t, b, rdb, "a")
	if _, err := b.lead.preCall(ctx, dead, it, wechat.APIToken, callForced); err != nil {
		t.Fatalf("first forced preCall: %v", err)
	}
	next := leadership(t, b, rdb, "b")
	if _, err := b.lead.preCall(ctx, next, it, wechat.APIToken, callForced); err != nil {
		t.Fatalf("forced preCall after a leader died during its forced call = %v; want allowed", err)
	}
	if _, err := testWrite(ctx, b, next, it, "tok-b", now.Add(time.Hour), now, "", false, 0, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.lead.preCall(ctx, next, it, wechat.APIToken, callForced); !errors.Is(err, ErrForceLimited) {
		t.Errorf("forced preCall within the leader's own force_min_interval = %v; want ErrForceLimited", err)
	}
	third := leadership(t, b, rdb, "c")
	if _, err := b.lead.preCall(ctx, third, it, wechat.APIToken, callForceCheck); !errors.Is(err, ErrForceLimited) {
		t.Errorf("force check after a previous leader's forced call was stored = %v; want ErrForceLimited", err)
	}
}

// TestFailedCallSettlesIntent (invariant 3): a credential call WeChat refused
// minted nothing, so it leaves no intent for the next leader to act on.
func TestFailedCallSettlesIntent(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	e.sim.Fail(wechat.APIToken, 1, wechattest.Fault{Errcode: 40164})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient); err == nil {
		t.Fatal("Invalidate succeeded although WeChat refused the call")
	}
	rdb := e.redis.Client(t)
	if v, err := rdb.HGet(context.Background(), n.b.store.keys.intent(testNS), app.AppID).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("intent after a refused call = %q, %v; want none", v, err)
	}
}

// TestOlderRecordRewritten (invariant 8): when Redis goes back to an older record
// (a Sentinel failover that lost the last write), the leader rewrites the
// newer one it holds — at the start of a term and while it leads — so a
// replica that starts afterwards gets the newer token, not the dead one.
func TestOlderRecordRewritten(t *testing.T) {
	for _, tc := range []struct {
		name     string
		takeover bool // the failover also costs the leader its term
	}{
		{"new term", true},
		{"same leader", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := classicApp(1)
			cfg := testConfig(t, app)
			e := newEnv(t, wechattest.Options{Overlap: 200 * time.Millisecond}, cfg)
			slow := func(n *node, _ *redis.Options) {
				if tc.takeover {
					// Only the term start may repair.
					n.setup = func(b *Broker) { b.reconcileEvery = time.Minute }
				}
			}
			nodes := []*node{e.start("a", slow), e.start("b", slow)}
			l := leader(t, 5*time.Second, nodes...)
			old := token(t, l, app.AppID)
			rdb := e.redis.Client(t)
			it := l.b.catalog().items[0]
			oldRaw := storedRaw(t, rdb, l.b, it)
			oldRec, err := parseRecord(oldRaw)
			if err != nil {
				t.Fatal(err)
			}
			fresh, err := l.b.Invalidate(context.Background(), testNS, app.AppID, old.AccessToken, metrics.SourceClient)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				waitFor(t, 5*time.Second, "every replica to hold the new token", func() bool {
					tok, err := n.b.AccessToken(testNS, app.AppID)
					return err == nil && tok.AccessToken == fresh.AccessToken
				})
			}
			waitFor(t, 3*time.Second, "the old token to die at the simulator", func() bool {
				return !e.sim.TokenValid(app.AppID, old.AccessToken)
			})
			// The failover: Redis is back to the old record and revision.
			ctx := context.Background()
			if err := rdb.HSet(ctx, l.b.store.keys.tok(testNS), it.field, oldRaw).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Set(ctx, l.b.store.keys.rev(), strconv.FormatInt(oldRec.Rev, 10), 0).Err(); err != nil {
				t.Fatal(err)
			}
			if tc.takeover {
				l.stop()
				var rest []*node
				for _, n := range nodes {
					if n != l {
						rest = append(rest, n)
					}
				}
				leader(t, cfg.Leader.LockTTL+5*time.Second, rest...)
			}
			waitFor(t, 5*time.Second, "the leader to rewrite the newer token", func() bool {
				return storedValue(t, rdb, l.b, it) == fresh.AccessToken
			})
			late := e.start("late")
			tok := token(t, late, app.AppID)
			if tok.AccessToken != fresh.AccessToken || !e.sim.TokenValid(app.AppID, tok.AccessToken) {
				t.Errorf("a replica started after the failover serves generation %d (valid at WeChat: %v); want the newer token",
					tok.Generation, e.sim.TokenValid(app.AppID, tok.AccessToken))
			}
			if tok.Generation != fresh.Generation {
				t.Errorf("generation after the rewrite = %d; want %d kept", tok.Generation, fresh.Generation)
			}
		})
	}
}

// TestEpochNeverGoesBackwards (invariant 2): a Redis restart without persistence
// starts INCR at 1 again; the next leader moves the epoch past the highest
// one the running replicas know, also when it only watched as a standby.
func TestEpochNeverGoesBackwards(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	token(t, a, app.AppID)
	// A second term: b takes over from a.
	b := e.start("b")
	a.stop()
	leader(t, cfg.Leader.LockTTL+5*time.Second, b)
	prev := b.b.el.term.Load()
	if prev == nil || prev.epoch < 2 {
		t.Fatalf("second term's epoch = %v; want at least 2", prev)
	}
	c := e.start("c")
	waitFor(t, 5*time.Second, "the standby to see the epoch", func() bool { return c.b.el.maxEpoch.Load() == prev.epoch })
	// Redis restarts empty and b goes away meanwhile: c, which only stood
	// by, leads.
	e.redis.Stop()
	b.stop()
	e.redis.Start()
	leader(t, 2*cfg.Leader.LockTTL+5*time.Second, c)
	tm := c.b.el.term.Load()
	if tm == nil || tm.epoch <= prev.epoch {
		t.Fatalf("epoch after the Redis restart = %v; want above %d", tm, prev.epoch)
	}
	got, err := e.redis.Client(t).Get(context.Background(), c.b.store.keys.epoch()).Int64()
	if err != nil || got != tm.epoch {
		t.Errorf("epoch key = %d, %v; want %d", got, err, tm.epoch)
	}
	if v := testutil.ToFloat64(c.m.LeaderEpoch); v != float64(tm.epoch) {
		t.Errorf("wxbroker_leader_epoch = %v; want %d", v, tm.epoch)
	}
	if len(c.logs.FilterMessageSnippet("moved past it").All()) == 0 {
		t.Error("no warning about the epoch moved past the known one")
	}
}

// reloadingClient is a Redis client that counts slot map reload requests,
// as *redis.ClusterClient receives them.
type reloadingClient struct {
	*redis.Client
	reloads atomic.Int64
}

func (c *reloadingClient) ReloadState(context.Context) { c.reloads.Add(1) }

// TestClusterStateReloaded (invariant 8): on Redis errors and on a lost lease the
// broker asks a Cluster client to reload its slot map at once, instead of
// routing the broker's slot to a dead master until the client's own periodic
// reload.
func TestClusterStateReloaded(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	part := &partition{}
	var rc *reloadingClient
	n := e.start("a", func(n *node, _ *redis.Options) {
		n.hook = part
		n.setup = func(b *Broker) {
			rc = &reloadingClient{Client: n.rdb}
			b.store.rdb = rc
		}
	})
	leader(t, 5*time.Second, n)
	token(t, n, app.AppID)
	before := rc.reloads.Load()
	part.on.Store(true)
	waitFor(t, cfg.Leader.LockTTL+5*time.Second, "the leader to lose its lease", func() bool { return !n.b.IsLeader() })
	waitFor(t, 5*time.Second, "a slot map reload", func() bool { return rc.reloads.Load() > before })
	part.on.Store(false)
	leader(t, cfg.Leader.LockTTL+5*time.Second, n)
}
