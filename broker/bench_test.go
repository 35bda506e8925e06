package broker

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
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
