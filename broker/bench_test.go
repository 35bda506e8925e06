package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// BenchmarkAccessToken measures the read path: a cache lookup, no Redis.
func BenchmarkAccessToken(b *testing.B) {
	cfg := testConfig(b, classicApp(1), classicApp(2))
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	defer rdb.Close()
	br, err := New(Options{Config: cfg, Redis: rdb, WeChat: &countingWeChat{}, Logger: zapNop(),
		Metrics: metrics.New(nil), InstanceID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	br.rep.apply(br.catalog().items[0], &record{Rev: 1, Gen: 1, Value: "bench-token", ExpiresAt: now.Add(time.Hour), FetchedAt: now})
	appid := appID(1)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.AccessToken(testNS, appid); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInvalidate1000 reports one token from 1000 goroutines over three
// replicas per iteration and requires exactly one WeChat call each time.
func BenchmarkInvalidate1000(b *testing.B) {
	app := classicApp(1)
	cfg := testConfig(b, app)
	// One forced refresh per iteration: lift the daily caps (the broker's
	// and the simulator's) that would stop a long run.
	cfg.Refresh.ForceDailyCap = 1 << 30
	e := newEnv(b, wechattest.Options{DailyQuota: 1 << 30}, cfg)
	nodes := []*node{e.start("a"), e.start("b"), e.start("c")}
	leader(b, 5*time.Second, nodes...)
	for _, n := range nodes {
		token(b, n, app.AppID)
	}
	b.ResetTimer()
	for range b.N {
		cur := token(b, nodes[0], app.AppID)
		for _, n := range nodes {
			waitFor(b, 5*time.Second, "replicas to agree", func() bool {
				tok, err := n.b.AccessToken(testNS, app.AppID)
				return err == nil && tok.AccessToken == cur.AccessToken
			})
		}
		before := e.sim.Calls(wechat.APIToken, app.AppID)
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for i := range 1000 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				tok, err := nodes[i%3].b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
				if err == nil && tok.AccessToken == cur.AccessToken {
					err = ErrNoToken
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatalf("Invalidate: %v", err)
		}
		if got := e.sim.Calls(wechat.APIToken, app.AppID) - before; got != 1 {
			b.Fatalf("1000 concurrent invalidations caused %d WeChat calls; want exactly 1", got)
		}
	}
	b.StopTimer()
	b.ReportMetric(1, "wechat_calls/op") // checked in every iteration
	b.Logf("target: 1000 concurrent invalidations of one token over 3 replicas → exactly 1 WeChat call: MET in every iteration")
}
