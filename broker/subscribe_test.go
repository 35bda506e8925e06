package broker

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestPubSubUpdatesFollowers (invariant 9): a new token reaches a follower through
// pub/sub, long before its next reconcile.
func TestPubSubUpdatesFollowers(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	cur := token(t, a, app.AppID)
	b := e.start("b", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.reconcileEvery = time.Minute }
	})
	token(t, b, app.AppID)
	got, err := a.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the follower to receive the new token (reconcile every minute)", func() bool {
		tok, err := b.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.AccessToken == got.AccessToken
	})
}
