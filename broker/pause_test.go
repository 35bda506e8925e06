package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// pauseFor makes n's heartbeat look as if the process had been stopped for d.
func pauseFor(n *node, d time.Duration) {
	n.b.rep.pause.beat.Store(n.b.rep.pause.since() - int64(d))
}

// TestReadAfterPauseReloadsFromRedis: a replica resumed after a pause must
// not serve from its cache before it has read what Redis holds now (the
// pub/sub messages of the pause are still unread); if Redis cannot answer it
// refuses, while a replica that was not paused keeps serving its cache.
func TestReadAfterPauseReloadsFromRedis(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{TokenTTL: time.Minute}, cfg)
	// No periodic reload: only the read path can notice the newer record.
	slow := func(n *node, _ *redis.Options) { n.setup = func(b *Broker) { b.reconcileEvery = time.Hour } }
	l := e.start("leader")
	leader(t, 5*time.Second, l)
	n := e.start("paused", slow)
	old := token(t, n, app.AppID)
	waitFor(t, 5*time.Second, "the heartbeat to run", func() bool { return n.b.rep.pause.beat.Load() != 0 })

	// A newer record reaches Redis while the replica is "stopped": written
	// without a pub/sub message, as one the replica has not read yet.
	cur := n.b.catalog().items[0].cur.Load()
	rec := fmt.Sprintf("%d\t%d\t%s", cur.Rev+1000, cur.Gen+1,
		recordTail("replaced-while-paused", cur.ExpiresAt, time.Now(), "test"))
	rdb := e.redis.Client(t)
	if err := rdb.HSet(context.Background(), n.b.store.keys.tok(testNS), n.b.catalog().items[0].field, rec).Err(); err != nil {
		t.Fatalf("HSET: %v", err)
	}
	if got, _ := n.b.AccessToken(testNS, app.AppID); got.AccessToken != old.AccessToken {
		t.Fatalf("before the pause the replica served %q; want its cached %q (no Redis read)", got.AccessToken, old.AccessToken)
	}
	pauseFor(n, 3*time.Second)
	got, err := n.b.AccessToken(testNS, app.AppID)
	if err != nil || got.AccessToken != "replaced-while-paused" {
		t.Fatalf("first read after a pause = %q, %v; want the record Redis holds", got.AccessToken, err)
	}

	// Redis down: a replica that was not paused serves its cache...
	l.stop()
	e.redis.Stop()
	waitFor(t, 5*time.Second, "the replica to see Redis down", func() bool {
		st := n.b.redisErr.Load()
		return st != nil && st.err != nil
	})
	if got, err := n.b.AccessToken(testNS, app.AppID); err != nil || got.AccessToken != "replaced-while-paused" {
		t.Fatalf("read with Redis down, no pause = %q, %v; want the cached token", got.AccessToken, err)
	}
	// ...but after a pause it cannot know whether its token still lives.
	pauseFor(n, 3*time.Second)
	if _, err := n.b.AccessToken(testNS, app.AppID); !errors.Is(err, ErrNoToken) {
		t.Fatalf("read after a pause with Redis down: err = %v; want ErrNoToken", err)
	}
	if _, err := n.b.AccessToken(testNS, app.AppID); !errors.Is(err, ErrNoToken) {
		t.Fatalf("second read after a pause with Redis down: err = %v; want ErrNoToken", err)
	}
	// Redis back: the next reload covers the pause and reads go on.
	e.redis.Start()
	waitFor(t, 10*time.Second, "reads to resume once Redis answers", func() bool {
		_, err := n.b.AccessToken(testNS, app.AppID)
		return err == nil
	})
}
