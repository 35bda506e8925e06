package broker

import (
	"context"
	"net"
	"strings"
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

// TestSentinelFailoverLosingLastWrite (§4.8): the master dies before its
// replica received the last token write, and Sentinel promotes the replica:
// Redis is back to the previous, already superseded token. The leader
// rewrites the newer token it holds, so a replica that starts after the
// failover serves it, not the dead one.
func TestSentinelFailoverLosingLastWrite(t *testing.T) {
	master := redistest.Start(t)
	host, port, _ := net.SplitHostPort(master.Addr)
	replica := redistest.Start(t, "--replicaof", host, port)
	rep := replica.Client(t)
	waitFor(t, 10*time.Second, "the replica to sync", func() bool {
		info, err := rep.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	sentinel := redistest.StartSentinel(t, master, "wxmaster")
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr})
	t.Cleanup(func() { _ = sc.Close() })
	waitFor(t, 15*time.Second, "the sentinel to know the replica", func() bool {
		r, err := sc.Replicas(context.Background(), "wxmaster").Result()
		return err == nil && len(r) == 1
	})

	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Redis.Addrs = []string{sentinel.Addr}
	cfg.Redis.MasterName = "wxmaster"
	e := newEnvWith(t, master, wechattest.Options{Overlap: 200 * time.Millisecond}, cfg)
	client, err := wechat.New(wechat.Options{BaseURL: e.sim.URL, Timeout: cfg.WeChat.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string) *Broker {
		rdb := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.Redis.MasterName, SentinelAddrs: cfg.Redis.Addrs,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
			MaxRetries: 1,
		})
		t.Cleanup(func() { _ = rdb.Close() })
		b, err := New(Options{Config: cfg, Redis: rdb, WeChat: client, Logger: zaptest.NewLogger(t).Named(name),
			Metrics: metrics.New(prometheus.NewRegistry()), InstanceID: name})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = b.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return b
	}
	a := run("a")
	var old Token
	waitFor(t, 10*time.Second, "a token through sentinel", func() bool {
		var err error
		old, err = a.AccessToken(testNS, app.AppID)
		return err == nil && a.IsLeader()
	})
	field := a.catalog().items[0].field
	waitFor(t, 5*time.Second, "the replica to hold the token", func() bool {
		raw, err := rep.HGet(context.Background(), a.store.keys.tok(testNS), field).Result()
		r, perr := parseRecord(raw)
		return err == nil && perr == nil && r.Value == old.AccessToken
	})

	// The replica misses the next write: stopped, and its link closed on the
	// master's side (else the write would wait in its socket buffer).
	replica.Pause()
	if err := master.Client(t).ClientKillByFilter(context.Background(), "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	fresh, err := a.Invalidate(context.Background(), testNS, app.AppID, old.AccessToken, metrics.SourceClient)
	if err != nil || fresh.AccessToken == old.AccessToken {
		t.Fatalf("Invalidate = generation %d, %v; want a new token", fresh.Generation, err)
	}
	master.Kill()
	replica.Resume()
	waitFor(t, 20*time.Second, "sentinel to promote the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), "wxmaster").Result()
		return err == nil && len(addr) == 2 && net.JoinHostPort(addr[0], addr[1]) == replica.Addr
	})
	waitFor(t, 20*time.Second, "the leader to rewrite the newer token on the promoted replica", func() bool {
		raw, err := rep.HGet(context.Background(), a.store.keys.tok(testNS), field).Result()
		r, perr := parseRecord(raw)
		return err == nil && perr == nil && r.Value == fresh.AccessToken
	})
	late := run("late")
	var got Token
	waitFor(t, 10*time.Second, "a token on a replica started after the failover", func() bool {
		var err error
		got, err = late.AccessToken(testNS, app.AppID)
		return err == nil
	})
	if got.AccessToken != fresh.AccessToken || !e.sim.TokenValid(app.AppID, got.AccessToken) {
		t.Errorf("replica started after the failover serves generation %d (valid at WeChat: %v); want generation %d",
			got.Generation, e.sim.TokenValid(app.AppID, got.AccessToken), fresh.Generation)
	}
}
