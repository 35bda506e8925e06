package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestReconcileRepairsMissedEvent (invariant 9): a write whose pub/sub message was
// lost reaches every replica through the periodic reconcile.
func TestReconcileRepairsMissedEvent(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	token(t, a, app.AppID)
	token(t, b, app.AppID)
	r := a.b.catalog().apps[testNS][app.AppID].token.cur.Load()
	now := time.Now()
	raw := fmt.Sprintf("%d\t%d\t%s", r.Rev+1000, r.Gen+1, recordTail("missed-event-token", now.Add(time.Hour), now, ""))
	if err := e.redis.Client(t).HSet(context.Background(), a.b.store.keys.tok(testNS), a.b.catalog().items[0].field, raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the follower to reconcile (every 500ms)", func() bool {
		tok, err := b.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.AccessToken == "missed-event-token"
	})
}
