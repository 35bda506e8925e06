package broker

import (
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestNoSplitBrainAfterRedisLosesData: a non-persistent Redis restarts empty,
// so the lock vanishes while the leader still believes in its lease. A
// replica that obtains the lock then must not lead (IsLeader, wxbroker_leader)
// before the old lease must have ended, and never two replicas lead at once.
func TestNoSplitBrainAfterRedisLosesData(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	// A renewal interval well below the lease, so that without the wait a
	// standby takes the lock long before the old lease ends.
	cfg.Leader.LockTTL = 3 * time.Second
	cfg.Leader.RenewInterval = time.Second
	e := newEnv(t, wechattest.Options{TokenTTL: time.Minute}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	old := leader(t, 10*time.Second, nodes...)
	for _, n := range nodes {
		token(t, n, app.AppID)
		waitFor(t, 5*time.Second, "every replica to know the epoch", func() bool { return n.b.el.maxEpoch.Load() >= 1 })
	}

	oldEpoch := old.b.el.term.Load().epoch
	killed := time.Now()
	e.redis.Kill()
	e.redis.Start() // same port, empty
	var first time.Time
	deadline := time.Now().Add(4*cfg.Leader.LockTTL + 10*time.Second)
	for first.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("no new term after the Redis restart")
		}
		leaders := 0
		for _, n := range nodes {
			if n.b.IsLeader() {
				leaders++
			}
			if tm := n.b.el.term.Load(); tm != nil && tm.ctx.Err() == nil && tm.epoch > oldEpoch {
				first = time.Now()
			}
		}
		if leaders > 1 {
			t.Fatalf("two replicas lead at once %s after the Redis restart", time.Since(killed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The old leader's last renewal was sent before the kill, so its lease
	// lasts at most leaseValidity after it.
	if got, min := first.Sub(killed), nodes[0].b.el.leaseValidity(); got < min {
		t.Errorf("a new term began %s after Redis lost the lock; want at least the old lease (%s)", got, min)
	}
	t.Logf("new term %s after the kill", first.Sub(killed))
	if len(nodes[0].logs.FilterMessageSnippet("waiting for any previous leader's lease").All())+
		len(nodes[1].logs.FilterMessageSnippet("waiting for any previous leader's lease").All()) == 0 {
		t.Error("no log of the wait for the previous lease")
	}
}
