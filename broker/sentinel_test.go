package broker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestSentinel runs a broker through a Sentinel-discovered master (the
// UniversalClient the daemon builds for redis.master_name).
func TestSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, master, "wxmaster")
	app := stableApp(1)
	cfg := testConfig(t, app)
	cfg.Redis.Addrs = []string{sentinel.Addr}
	cfg.Redis.MasterName = "wxmaster"
	e := newEnvWith(t, master, wechattest.Options{}, cfg)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Redis.Addrs, MasterName: cfg.Redis.MasterName})
	t.Cleanup(func() { _ = rdb.Close() })
	client, err := wechat.New(wechat.Options{BaseURL: e.sim.URL, Timeout: cfg.WeChat.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Options{Config: cfg, Redis: rdb, WeChat: client, Logger: zaptest.NewLogger(t),
		Metrics: metrics.New(prometheus.NewRegistry()), InstanceID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 5*time.Second, "a token through sentinel", func() bool {
		_, err := b.AccessToken(testNS, app.AppID)
		return err == nil && b.IsLeader()
	})
	st := b.Status(context.Background())
	if !st.Redis.OK || st.LeaderID != "s" || st.Epoch != 1 {
		t.Errorf("Status = redis %+v, leader %q, epoch %d; want ok, s, 1", st.Redis, st.LeaderID, st.Epoch)
	}
}
