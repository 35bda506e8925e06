package broker

import (
	"context"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestRedisOutage stops Redis for longer than the lock TTL and starts it
// again, empty: every replica keeps serving its cached token, the leader
// steps down and refreshes nothing, and leadership, the subscriber and
// refresh come back by themselves (the new leader restores the token to
// Redis from its cache instead of fetching a new one).
func TestRedisOutage(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{TokenTTL: time.Minute}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	leader(t, 5*time.Second, nodes...)
	for _, n := range nodes {
		token(t, n, app.AppID)
	}
	r := startReader(t, e, nodes, []string{app.AppID}, true)
	calls := e.sim.Calls(wechat.APIToken, app.AppID)

	e.redis.Stop()
	down := time.Now()
	waitFor(t, cfg.Leader.LockTTL+time.Second, "the leader to step down", func() bool {
		return !nodes[0].b.IsLeader() && !nodes[1].b.IsLeader()
	})
	t.Logf("leader stepped down %s after Redis stopped", time.Since(down))
	for _, n := range nodes {
		if err := n.b.Ready(); err != nil {
			t.Errorf("Ready() on %s during the outage = %v; want nil (cached token valid)", n.b.id, err)
		}
		if st := n.b.Status(context.Background()); st.Redis.OK || st.Role != RoleStandby {
			t.Errorf("Status on %s during the outage: redis ok %v, role %q; want false, standby", n.b.id, st.Redis.OK, st.Role)
		}
	}
	// Stay down past a second lock TTL: still nobody leads, reads go on.
	waitFor(t, 3*cfg.Leader.LockTTL, "the outage to outlast twice the lock TTL", func() bool {
		return time.Since(down) > 2*cfg.Leader.LockTTL
	})
	for _, n := range nodes {
		if n.b.IsLeader() {
			t.Errorf("%s leads without Redis", n.b.id)
		}
	}

	e.redis.Start() // same port, no data
	l := leader(t, 2*cfg.Leader.LockTTL+time.Second, nodes...)
	rdb := e.redis.Client(t)
	waitFor(t, 3*time.Second, "the token restored to Redis", func() bool {
		n, err := rdb.HExists(context.Background(), l.b.store.keys.tok(testNS), l.b.catalog().items[0].field).Result()
		return err == nil && n
	})
	if got := e.sim.Calls(wechat.APIToken, app.AppID); got != calls {
		t.Errorf("token calls went from %d to %d over the outage; want no new fetch", calls, got)
	}
	for _, n := range nodes {
		if st := n.b.Status(context.Background()); !st.Redis.OK {
			t.Errorf("Status on %s after the outage: redis %+v; want ok", n.b.id, st.Redis)
		}
	}

	// Refresh works again and reaches the follower through pub/sub (or reconcile).
	follower := nodes[0]
	if follower == l {
		follower = nodes[1]
	}
	cur, _ := l.b.AccessToken(testNS, app.AppID)
	fresh, err := l.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	if err != nil {
		t.Fatalf("Invalidate after the outage: %v", err)
	}
	waitFor(t, 3*time.Second, "the follower to get the new token", func() bool {
		tok, err := follower.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.AccessToken == fresh.AccessToken
	})
	if fresh.Generation <= cur.Generation {
		t.Errorf("generation went from %d to %d; want it to grow across the Redis restart", cur.Generation, fresh.Generation)
	}
	r.check(t)
}
