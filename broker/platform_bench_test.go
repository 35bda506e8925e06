package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	wxmetrics "github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// BenchmarkPlatform10k: one Open Platform component with 10,000 authorizers
// (docs/BENCHMARKS.md), its simulator in a child process as for
// BenchmarkTenThousandApps, every token (component and authorizers) living
// platformLifetime instead of 7200 s. The authorizers arrive as one Import
// of their refresh tokens; the benchmark reports how long the import took,
// the time from it to every authorizer served (the first full schedule),
// then, over platformWindow, late tokens (an authorizer token with less
// life left than before_expiry promises), reads that found none, the CPU
// the broker used, and its peak heap and RSS.
// WXBROKER_BENCH_AUTHORIZERS overrides the count (e.g. 100000),
// WXBROKER_BENCH_LIFETIME the lifetime and WXBROKER_BENCH_WINDOW the
// window (Go durations), WXBROKER_BENCH_CONCURRENCY refresh.concurrency:
// 100,000 authorizers need a lifetime ten times as
// long for the same refresh rate, and a window at least that long.

const (
	platformAuthorizers = 10_000
	platformLifetime    = 20 * time.Second
	platformWindow      = 30 * time.Second
	platformStartup     = 3 * time.Minute
	platformCheckEvery  = 250 * time.Millisecond
)

// platformSeed is what the simulator child prints after its URL: the
// latest verify ticket and every authorizer's refresh token.
type platformSeed struct {
	Ticket  string              `json:"ticket"`
	Entries []RefreshTokenEntry `json:"entries"`
}

// seedPlatform registers spec's component with srv and has its
// authorizers authorize it.
func seedPlatform(srv *wechattest.Server, spec simSpec) (platformSeed, error) {
	c := spec.Component
	if err := srv.AddComponent(wechattest.Component{AppID: c, Secret: secretOf(c), Token: "msgtoken", EncodingAESKey: testAESKey}); err != nil {
		return platformSeed{}, err
	}
	ctx := context.Background()
	tk, err := srv.PushTicket(ctx, c)
	if err != nil {
		return platformSeed{}, err
	}
	seed := platformSeed{Ticket: tk}
	for i := range spec.Authorizers {
		a := authID(i)
		if _, err := srv.Authorize(ctx, c, a); err != nil {
			return platformSeed{}, err
		}
		rt, _ := srv.RefreshToken(c, a)
		seed.Entries = append(seed.Entries, RefreshTokenEntry{AuthorizerAppID: a, RefreshToken: rt})
	}
	return seed, nil
}

func BenchmarkPlatform10k(b *testing.B) {
	n := platformAuthorizers
	if v, err := strconv.Atoi(os.Getenv("WXBROKER_BENCH_AUTHORIZERS")); err == nil && v > 0 {
		n = v
	}
	lifetime, window := platformLifetime, platformWindow
	if d, err := time.ParseDuration(os.Getenv("WXBROKER_BENCH_LIFETIME")); err == nil && d > 0 {
		lifetime = d
	}
	if d, err := time.ParseDuration(os.Getenv("WXBROKER_BENCH_WINDOW")); err == nil && d > 0 {
		window = d
	}
	comp := compID(1)
	cfg := platformConfig(b, comp)
	cfg.InstanceID = "bench"
	cfg.Redis.KeyPrefix = "benchop"
	cfg.Leader = config.Default().Leader
	cfg.WeChat.Timeout = config.Default().WeChat.Timeout
	cfg.Refresh = config.Default().Refresh
	if c, err := strconv.Atoi(os.Getenv("WXBROKER_BENCH_CONCURRENCY")); err == nil && c > 0 {
		cfg.Refresh.Concurrency = c
	}

	url, rd := startSimProcessWith(b, simSpec{TokenTTL: lifetime, Component: comp, Authorizers: n})
	var seed platformSeed
	if err := json.NewDecoder(rd).Decode(&seed); err != nil {
		b.Fatalf("read the simulator's seed: %v", err)
	}
	rs := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	wx, err := wechat.New(wechat.Options{BaseURL: url, Timeout: cfg.WeChat.Timeout})
	if err != nil {
		b.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	pw := &countingPlatform{inner: wx}
	br, err := New(Options{Config: cfg, Redis: rdb, WeChat: wx, PlatformWeChat: pw, Logger: zap.New(core),
		Metrics: wxmetrics.New(prometheus.NewRegistry())})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = br.Run(ctx)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	p := br.Platform()
	if err := p.HandleEvent(ctx, testNS, comp, msgcrypt.Event{AppID: comp, CreateTime: time.Now().Truncate(time.Second),
		InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: seed.Ticket}); err != nil {
		b.Fatal(err)
	}

	began := time.Now()
	res, err := p.Import(ctx, testNS, comp, seed.Entries)
	if err != nil || res.Imported != n {
		b.Fatalf("Import = %+v, %v", res, err)
	}
	imported := time.Since(began)
	startup := waitAllServed(b, "after the import", func() bool { return true }, p, comp, seed.Entries, began, max(platformStartup, lifetime))
	runtime.GC()

	b.ResetTimer()
	promised := cfg.Refresh.BeforeExpiry.Of(lifetime)
	var (
		late, missing int
		minMargin     = time.Duration(1<<63 - 1)
		peakHeap      uint64
		lateExample   string
	)
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	callsBefore := pw.authorizer.Load()
	ru0 := rusage(b)
	wall0 := time.Now()
	// The checker reads every authorizer's token; its period grows with the
	// count so that its reads (40,000 a second) stay a small part of the
	// CPU measured.
	tick := time.NewTicker(platformCheckEvery * time.Duration(max(1, n/platformAuthorizers)))
	for time.Since(wall0) < window {
		<-tick.C
		now := time.Now()
		for _, e := range seed.Entries {
			tok, err := p.AuthorizerToken(testNS, comp, e.AuthorizerAppID)
			if err != nil {
				missing++
				continue
			}
			margin := tok.ExpiresAt.Sub(now) - promised
			minMargin = min(minMargin, margin)
			if margin < -tenAppsSlack {
				if late == 0 {
					lateExample = fmt.Sprintf("%s has %s left; promised at least %s", e.AuthorizerAppID,
						tok.ExpiresAt.Sub(now).Round(time.Millisecond), promised)
				}
				late++
			}
		}
		metrics.Read(samples)
		peakHeap = max(peakHeap, samples[0].Value.Uint64())
	}
	tick.Stop()
	wall := time.Since(wall0)
	ru1 := rusage(b)
	b.StopTimer()
	calls := pw.authorizer.Load() - callsBefore
	cpu := (ru1.cpu - ru0.cpu).Seconds() / wall.Seconds()
	rssMB := float64(ru1.maxRSS) / (1 << 20)
	heapMB := float64(peakHeap) / (1 << 20)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(0, "B/op")
	b.ReportMetric(0, "allocs/op")
	b.ReportMetric(cpu, "cores")
	b.ReportMetric(rssMB, "peak_rss_MB")
	b.ReportMetric(heapMB, "peak_heap_MB")
	b.ReportMetric(float64(late), "late")
	b.ReportMetric(float64(missing), "missing_reads")
	b.ReportMetric(float64(calls)/wall.Seconds(), "refreshes/s")
	b.ReportMetric(minMargin.Seconds(), "min_margin_s")
	b.ReportMetric(imported.Seconds(), "import_s")
	b.ReportMetric(startup.Seconds(), "first_full_schedule_s")
	restart := restartPlatform(b, cancel, done, Options{Config: cfg, Redis: rdb, WeChat: wx, PlatformWeChat: pw,
		Logger: zap.New(core), Metrics: wxmetrics.New(prometheus.NewRegistry())}, comp, seed.Entries)
	b.ReportMetric(restart.Seconds(), "restart_to_served_s")
	b.Logf("restart: a new broker over the stored authorizers was leader and served all %d authorizer tokens %s after New", n, restart.Round(10*time.Millisecond))
	b.Logf("%d authorizers of one component, %s lifetimes, %s window: import %s, every authorizer served %s after the import began; "+
		"%d authorizer refreshes (%.0f/s); cores %.3f; peak RSS %.0f MB, heap %.0f MB; late %d, missing reads %d; "+
		"least margin over the promise %s; %d warnings logged",
		n, lifetime, wall.Round(time.Second), imported.Round(10*time.Millisecond), startup.Round(100*time.Millisecond),
		calls, float64(calls)/wall.Seconds(), cpu, rssMB, heapMB, late, missing, minMargin.Round(time.Millisecond), logs.Len())
	for _, e := range logs.All()[:min(logs.Len(), 5)] {
		b.Logf("logged: %s %v", e.Message, e.ContextMap())
	}
	if late > 0 || missing > 0 {
		b.Fatalf("%d late tokens (first: %s), %d missing reads", late, lateExample, missing)
	}
	if calls == 0 {
		b.Fatal("no refresh happened in the window")
	}
}

// restartPlatform stops the running broker (cancel, then done closes; it
// releases its lock) and measures the start-up of a new one over the same
// Redis: from New until it is the leader (its scheduler has followed the
// whole catalog) and its cache serves every authorizer's token, as after a
// rollout. The new broker runs until the benchmark ends.
func restartPlatform(b *testing.B, cancel context.CancelFunc, done <-chan struct{}, opts Options, comp string, entries []RefreshTokenEntry) time.Duration {
	b.Helper()
	cancel()
	<-done
	began := time.Now()
	br, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = br.Run(ctx)
	}()
	b.Cleanup(func() {
		stop()
		<-stopped
	})
	return waitAllServed(b, "restart", br.IsLeader, br.Platform(), comp, entries, began, platformStartup)
}

// waitAllServed waits until ready holds and p serves a token for every
// entry, and returns the time since began; it fails the benchmark after
// limit.
func waitAllServed(b *testing.B, phase string, ready func() bool, p *Platform, comp string, entries []RefreshTokenEntry, began time.Time, limit time.Duration) time.Duration {
	b.Helper()
	for {
		served := 0
		if ready() {
			for _, e := range entries {
				if _, err := p.AuthorizerToken(testNS, comp, e.AuthorizerAppID); err == nil {
					served++
				}
			}
		}
		if served == len(entries) {
			return time.Since(began)
		}
		if time.Since(began) > limit {
			b.Fatalf("%s: after %s %d of %d authorizers have a token (ready %t)",
				phase, time.Since(began).Round(time.Second), served, len(entries), ready())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
