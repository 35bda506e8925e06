package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
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
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// A target of docs/BENCHMARKS.md: 10,000 configured apps with short simulated lifetimes → no
// refresh late, < 0.5 core and < 256 MB per replica.
//
// BenchmarkTenThousandApps runs one broker (the leader: the replica that does
// the work) with 10,000 apps, half classic and half stable, against a real
// redis-server and the WeChat simulator, whose tokens live tenAppsLifetime
// instead of 7200 s: 360 times WeChat's refresh rate. The simulator runs in a
// child process (the test binary run again with simEnv set), so that the CPU
// and memory measured here are the broker's own. After every app has its
// first token, the benchmark measures for tenAppsWindow: the CPU time the
// process used (getrusage) over the wall time, the peak heap and RSS, and
// every 100 ms it reads every app's token and checks that none is
// past the point where the refresh policy promises a new one.

const (
	tenAppsCount    = 10_000
	tenAppsLifetime = 20 * time.Second
	tenAppsRotation = 5 * time.Second // stable_rotation_window and the simulator's
	tenAppsWindow   = 30 * time.Second
	tenAppsStartup  = 2 * time.Minute // bound on the first fetch of every token
	// tenAppsSlack is how far past its promised refresh point a token may
	// still be current before it counts as late: a refresh call's own
	// duration plus the checker's period.
	tenAppsSlack = time.Second
	// tenAppsCheckEvery is the checker's period. Its reads (40,000 a second)
	// are counted in the CPU figure: about 0.01 core.
	tenAppsCheckEvery = 250 * time.Millisecond

	targetCores = 0.5
	targetMB    = 256
)

// simEnv carries a JSON simSpec to the child process that serves the simulator.
const simEnv = "WXBROKER_BENCH_SIM"

type simSpec struct {
	Apps           int           `json:"apps"` // appID(0) … appID(Apps-1), secrets secretOf(appid)
	TokenTTL       time.Duration `json:"token_ttl"`
	RotationWindow time.Duration `json:"rotation_window"`
	// Component, when set, is registered with Authorizers authorizers
	// (authID(0) …) that authorized it; the child prints a second line:
	// the JSON platformSeed (platform_bench_test.go).
	Component   string `json:"component,omitempty"`
	Authorizers int    `json:"authorizers,omitempty"`
}

// runSimProcess serves the simulator, prints its URL and runs until stdin
// closes (the parent ended).
func runSimProcess(specJSON string) int {
	var spec simSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "sim: bad spec:", err)
		return 2
	}
	srv := wechattest.NewServer(wechattest.Options{
		TokenTTL: spec.TokenTTL, RotationWindow: spec.RotationWindow, DailyQuota: 1 << 30,
	})
	defer srv.Close()
	for i := range spec.Apps {
		srv.AddApp(appID(i), secretOf(appID(i)))
	}
	fmt.Println(srv.URL)
	if spec.Component != "" {
		seed, err := seedPlatform(srv, spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			return 2
		}
		_ = json.NewEncoder(os.Stdout).Encode(seed)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startSimProcess starts the simulator in a child process and returns its URL.
func startSimProcess(b *testing.B, spec simSpec) string {
	url, _ := startSimProcessWith(b, spec)
	return url
}

// startSimProcessWith is startSimProcess that also returns the child's
// output after the URL line.
func startSimProcessWith(b *testing.B, spec simSpec) (string, *bufio.Reader) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("find the test binary: %v", err)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), simEnv+"="+string(specJSON))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the simulator process: %v", err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil {
		b.Fatalf("simulator process: %v", err)
	}
	return strings.TrimSpace(line), rd
}

// tenAppsConfig is production's defaults with n apps in namespace prod.
func tenAppsConfig(b *testing.B, n int) (*config.Config, time.Duration) {
	cfg := config.Default()
	cfg.InstanceID = "bench"
	cfg.Redis.KeyPrefix = "bench10k"
	cfg.Redis.Addrs = []string{"127.0.0.1:6379"} // for Validate; the benchmark's client has its own
	cfg.Refresh.StableRotationWindow = tenAppsRotation
	apps := make([]*config.App, n)
	for i := range apps {
		if i%2 == 0 {
			apps[i] = classicApp(i)
		} else {
			apps[i] = stableApp(i)
		}
	}
	cfg.Namespaces = map[string]*config.Namespace{testNS: {Apps: apps}}
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		b.Fatalf("Validate: %v", err)
	}
	return cfg, time.Since(start)
}

// promisedLeft is the least life a current token may have left under the
// refresh policy: classic tokens are replaced when before_expiry (+ jitter)
// of their life is left, stable ones at 80% of the rotation window (minus
// jitter, at most half the window).
func promisedLeft(cfg *config.Config, a *config.App, life time.Duration) time.Duration {
	r := cfg.Refresh
	if a.TokenMode != config.ModeClassic && r.StableRotationWindow > 0 && r.StableRotationWindow < life {
		w := r.StableRotationWindow
		return w*4/5 - min(r.Jitter.Of(w), w/2)
	}
	return r.BeforeExpiry.Of(life)
}

func BenchmarkTenThousandApps(b *testing.B) {
	cfg, validate := tenAppsConfig(b, tenAppsCount)
	apps := cfg.Namespaces[testNS].Apps
	ids := make([]string, len(apps))
	for i, a := range apps {
		ids[i] = a.AppID
	}
	simURL := startSimProcess(b, simSpec{Apps: len(ids), TokenTTL: tenAppsLifetime, RotationWindow: tenAppsRotation})
	rs := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	wx, err := wechat.New(wechat.Options{BaseURL: simURL, Timeout: cfg.WeChat.Timeout})
	if err != nil {
		b.Fatal(err)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	counted := &countingWeChat{inner: wx}
	br, err := New(Options{Config: cfg, Redis: rdb, WeChat: counted, Logger: zap.New(core),
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

	// Startup: every app gets its first token.
	began := time.Now()
	for {
		served := 0
		for _, id := range ids {
			if _, err := br.AccessToken(testNS, id); err == nil {
				served++
			}
		}
		if served == len(ids) {
			break
		}
		if time.Since(began) > tenAppsStartup {
			b.Fatalf("after %s only %d of %d apps have a token", tenAppsStartup, served, len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	startup := time.Since(began)
	runtime.GC()

	// Steady state.
	b.ResetTimer()
	promised := make([]time.Duration, len(apps))
	for i, a := range apps {
		promised[i] = promisedLeft(cfg, a, tenAppsLifetime)
	}
	var (
		late, expired int
		minMargin     = time.Duration(1<<63 - 1) // least (life left − promised) seen
		peakHeap      uint64
		lateExample   string
	)
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	callsBefore := counted.total()
	ru0 := rusage(b)
	wall0 := time.Now()
	tick := time.NewTicker(tenAppsCheckEvery)
	for time.Since(wall0) < tenAppsWindow {
		<-tick.C
		now := time.Now()
		for i, id := range ids {
			tok, err := br.AccessToken(testNS, id)
			if err != nil {
				expired++
				continue
			}
			margin := tok.ExpiresAt.Sub(now) - promised[i]
			minMargin = min(minMargin, margin)
			if margin < -tenAppsSlack {
				if late == 0 {
					lateExample = fmt.Sprintf("%s (%s) has %s left; promised at least %s",
						id, apps[i].TokenMode, tok.ExpiresAt.Sub(now).Round(time.Millisecond), promised[i])
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
	calls := counted.total() - callsBefore

	cpu := (ru1.cpu - ru0.cpu).Seconds() / wall.Seconds()
	rssMB := float64(ru1.maxRSS) / (1 << 20)
	heapMB := float64(peakHeap) / (1 << 20)
	warnings := logs.Len()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(0, "B/op")
	b.ReportMetric(0, "allocs/op")
	b.ReportMetric(cpu, "cores")
	b.ReportMetric(rssMB, "peak_rss_MB")
	b.ReportMetric(heapMB, "peak_heap_MB")
	b.ReportMetric(float64(late), "late")
	b.ReportMetric(float64(expired), "expired_reads")
	b.ReportMetric(float64(calls)/wall.Seconds(), "refreshes/s")
	b.ReportMetric(minMargin.Seconds(), "min_margin_s")
	b.ReportMetric(startup.Seconds(), "startup_s")
	b.ReportMetric(float64(validate.Microseconds())/1e3, "validate_ms")

	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	b.Logf("target: %d apps, %s lifetimes, %s window, %d refreshes (%.0f/s), first tokens after %s: "+
		"cores %.3f (target < %.1f): %s; peak RSS %.0f MB, heap %.0f MB (target < %d MB): %s; "+
		"late %d, expired reads %d (target 0): %s; least margin over the promise %s; %d warnings logged",
		tenAppsCount, tenAppsLifetime, wall.Round(time.Second), calls, float64(calls)/wall.Seconds(),
		startup.Round(100*time.Millisecond),
		cpu, targetCores, verdict(cpu < targetCores), rssMB, heapMB, targetMB, verdict(rssMB < targetMB),
		late, expired, verdict(late == 0 && expired == 0), minMargin.Round(time.Millisecond), warnings)
	if warnings > 0 {
		for _, e := range logs.All()[:min(warnings, 5)] {
			b.Logf("logged: %s %v", e.Message, e.ContextMap())
		}
	}
	if late > 0 || expired > 0 {
		b.Fatalf("%d late tokens (first: %s), %d expired reads", late, lateExample, expired)
	}
	if calls == 0 {
		b.Fatal("no refresh happened in the window: the lifetime is too long for it")
	}
	if cpu >= 2*targetCores || rssMB >= 2*targetMB {
		b.Fatalf("%.2f cores, %.0f MB: far beyond the targets", cpu, rssMB)
	}
}

type usage struct {
	cpu    time.Duration
	maxRSS int64 // bytes
}

func rusage(b *testing.B) usage {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return usage{
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		maxRSS: ru.Maxrss * 1024, // kilobytes on Linux
	}
}
