package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/broker/api"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
)

// BenchmarkServeWrk measures the token-read targets of docs/BENCHMARKS.md as
// users run the broker: the real `wxbroker serve` binary, with a real
// redis-server and `wxbroker sim` as WeChat, its audit log on stderr into a
// file, driven over loopback by wrk (Debian package wrk; `make deps`
// installs it). It is compared with two servers in their own processes (this
// test binary run again): a bare echo handler returning the same JSON, and
// the same handler doing one Redis GET per request against the same
// redis-server. The rounds are interleaved, in alternating order, so that
// drift in the machine's load hits the three alike, and only the ratios of
// each round are judged: their median, with their min and max printed.
// Each round also records the CPU time the serving processes spent per
// request (for the Redis variant, redis-server's included): the same ratios
// by CPU are what the throughput ratios come to when the servers are
// CPU-bound, and a shared host moves them much less.
//
// Without wrk on PATH the benchmark skips. WXBROKER_BIN names the binary to
// measure; unset, it is built from this tree.

// Load shape of the wrk runs: one wrk thread and 32 keep-alive connections,
// as the in-process benchmark (broker/api) uses, so that the load generator
// takes at most one of two cores.
const (
	wrkThreads  = 1
	wrkConns    = 32
	wrkWarmup   = 2 * time.Second
	wrkDuration = 3 * time.Second
	wrkRounds   = 5
)

// Targets, and the margins below which the benchmark fails (as in broker/api)
// when the ratios by CPU per request are below them too.
const (
	wrkTargetAPIBare  = 0.9
	wrkTargetAPIRedis = 1.8
	wrkFailAPIBare    = 0.8
	wrkFailAPIRedis   = 1.4
)

// echoBenchEnv carries an echoBenchSpec to a child process that serves one
// of the comparison handlers (TestMain).
const echoBenchEnv = "WXBROKER_BENCH_ECHO"

// echoBenchSpec is what a comparison server serves.
type echoBenchSpec struct {
	Listen string    `json:"listen"`
	Redis  string    `json:"redis,omitempty"` // set: one GET of RedisKey per request
	Key    string    `json:"key,omitempty"`
	Answer tokenJSON `json:"answer"`
}

// tokenJSON is the token answer's shape (DESIGN §5).
type tokenJSON struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Generation  int64  `json:"generation"`
}

const wrkTokenRoute = "/v1/namespaces/:ns/apps/:appid/access_token"

// runEchoBench serves the comparison handler of spec until killed, behind the
// API's own http.Server limits and timeouts.
func runEchoBench(specJSON string) int {
	var spec echoBenchSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "echo bench: bad spec:", err)
		return 2
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	if spec.Redis == "" {
		e.GET(wrkTokenRoute, func(c echo.Context) error {
			return c.JSON(http.StatusOK, spec.Answer)
		})
	} else {
		rdb := redis.NewClient(&redis.Options{Addr: spec.Redis})
		e.GET(wrkTokenRoute, func(c echo.Context) error {
			v, err := rdb.Get(c.Request().Context(), spec.Key).Result()
			if err != nil {
				return err
			}
			out := spec.Answer
			out.AccessToken = v
			return c.JSON(http.StatusOK, out)
		})
	}
	srv := &http.Server{
		Addr: spec.Listen, Handler: e,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: api.MaxHeaderBytes,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "echo bench:", err)
		return 1
	}
	return 0
}

const (
	wrkApp = "wx2000000000000001"
	wrkKey = "wrk-bench-client-key-0123456789abcdef"
)

// writeWrkConfig writes a serve config shaped like a small production one:
// two namespaces, four apps, several clients with allow patterns, JSON logs
// at info, gateway on (the default).
func writeWrkConfig(b *testing.B, dir string, port int, redisAddr, simURL string) string {
	b.Helper()
	cfg := fmt.Sprintf(`instance_id: wrk-bench
listen: 127.0.0.1:%d
log: {level: info, format: json}
redis: {addrs: [%q], key_prefix: wrkbench}
wechat: {base_url: %q, fallback_urls: [], timeout: 2s}
namespaces:
  prod:
    apps:
      - {appid: %s, secret: secret-1, kind: official_account, token_mode: stable}
      - {appid: wx2000000000000002, secret: secret-2, kind: miniprogram, token_mode: stable}
  staging:
    apps:
      - {appid: wx2000000000000003, secret: secret-3, kind: official_account, token_mode: stable}
      - {appid: wx2000000000000004, secret: secret-4, kind: miniprogram, token_mode: stable}
clients:
  - {name: orders, key_sha256: %s, allow: ["prod/*"]}
  - {name: staging-all, key_sha256: %s, allow: ["staging/*"]}
  - {name: payments, key_sha256: %s, allow: ["prod/wx2000000000000002"]}
  - {name: ops, key_sha256: %s, allow: ["*/*"], admin: true}
`, port, redisAddr, simURL, wrkApp,
		config.HashKey(wrkKey), config.HashKey("staging-key-0123456789"),
		config.HashKey("payments-key-0123456789"), config.HashKey("ops-key-0123456789"))
	path := filepath.Join(dir, "wxbroker.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

func BenchmarkServeWrk(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk not found on PATH: `make deps` installs it (apt-get install wrk)")
	}
	// WXBROKER_BIN measures a given binary (another build or version)
	// instead of one built from this tree.
	bin := os.Getenv("WXBROKER_BIN")
	if bin == "" {
		bin = wxbrokerBinary(b)
	}
	dir := b.TempDir()
	rs := redistest.Start(b)

	simPort := redistest.FreePort(b)
	simArgs := []string{"sim", "--listen", fmt.Sprintf("127.0.0.1:%d", simPort)}
	for i := 1; i <= 4; i++ {
		simArgs = append(simArgs, "--app", fmt.Sprintf("wx200000000000000%d:secret-%d", i, i))
	}
	redistest.StartProcess(b, bin, simArgs, filepath.Join(dir, "sim.log"))
	simURL := fmt.Sprintf("http://127.0.0.1:%d", simPort)

	apiPort := redistest.FreePort(b)
	cfgPath := writeWrkConfig(b, dir, apiPort, rs.Addr, simURL)
	// stderr (logs and the audit log) goes to a file, as under a supervisor.
	serveLog := filepath.Join(dir, "serve.log")
	serve := redistest.StartProcess(b, bin, []string{"serve", "--config", cfgPath}, serveLog)
	apiBase := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	path := "/v1/namespaces/prod/apps/" + wrkApp + "/access_token"

	var answer tokenJSON
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := httpGet(apiBase, path, wrkKey)
		if err == nil && code == http.StatusOK {
			if err := json.Unmarshal(body, &answer); err != nil {
				b.Fatalf("token answer %s: %v", body, err)
			}
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(serveLog)
			b.Fatalf("wxbroker serve not serving a token after 30 s (last: %d %s %v); log:\n%s", code, body, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}

	rdb := rs.Client(b)
	if err := rdb.Set(context.Background(), "bench:token", answer.AccessToken, 0).Err(); err != nil {
		b.Fatal(err)
	}
	redisPID, err := redisServerPID(rdb)
	if err != nil {
		b.Fatal(err)
	}
	bare := startEchoBench(b, dir, "bare", echoBenchSpec{Answer: answer})
	withRedis := startEchoBench(b, dir, "redis", echoBenchSpec{Answer: answer, Redis: rs.Addr, Key: "bench:token"})

	// The cost of a request is the CPU time of every process serving it:
	// the redis variant's includes redis-server's.
	targets := []wrkTarget{
		{name: "api", url: apiBase + path, pids: []int{serve.Pid()}},
		{name: "bare", url: "http://" + bare.addr + path, pids: []int{bare.pid}},
		{name: "redis", url: "http://" + withRedis.addr + path, pids: []int{withRedis.pid, redisPID}},
	}
	for i := range targets {
		runWrk(b, wrk, targets[i].url, wrkWarmup)
	}
	b.ResetTimer()
	var apiBare, apiRedis, p99, cpuBare, cpuRedis []float64
	for round := range wrkRounds {
		var r [3]wrkResult
		for k := range targets {
			i := k
			if round%2 == 1 {
				i = len(targets) - 1 - k
			}
			r[i] = targets[i].measure(b, wrk, wrkDuration)
		}
		apiBare = append(apiBare, r[0].rps/r[1].rps)
		apiRedis = append(apiRedis, r[0].rps/r[2].rps)
		p99 = append(p99, float64(r[0].p99)/float64(r[1].p99))
		api, bare, redis := targets[0].cpu[round], targets[1].cpu[round], targets[2].cpu[round]
		cpuBare = append(cpuBare, bare/api)
		cpuRedis = append(cpuRedis, redis/api)
		b.Logf("round %d: req/s api %.0f, bare %.0f, redis %.0f; CPU µs/request api %.1f, bare %.1f, redis %.1f; "+
			"api/bare %.2f (by CPU %.2f), api/redis %.2f (by CPU %.2f)",
			round+1, r[0].rps, r[1].rps, r[2].rps, api, bare, redis,
			apiBare[round], cpuBare[round], apiRedis[round], cpuRedis[round])
	}
	b.StopTimer()

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(0, "B/op")
	b.ReportMetric(0, "allocs/op")
	for _, t := range targets {
		b.ReportMetric(medianOf(t.rps), t.name+"_req/s")
		b.ReportMetric(medianOf(t.cpu), t.name+"_cpu_µs/req")
	}
	b.ReportMetric(medianOf(cpuBare), "cpu_api/bare")
	b.ReportMetric(medianOf(cpuRedis), "cpu_api/redis")
	b.ReportMetric(medianOf(apiBare), "api/bare")
	b.ReportMetric(medianOf(apiRedis), "api/redis")
	b.ReportMetric(medianOf(p99), "p99_api/bare")
	verdict := func(name string, xs []float64, target float64) string {
		v := "MET"
		if medianOf(xs) < target {
			v = "MISSED"
		}
		return fmt.Sprintf("%s median %.2f (min %.2f, max %.2f; target ≥ %.1f): %s",
			name, medianOf(xs), slices.Min(xs), slices.Max(xs), target, v)
	}
	b.Logf("target: wxbroker serve under wrk -t%d -c%d, %d rounds of %s per server, throughput: %s; %s; p99 api/bare median %.2f",
		wrkThreads, wrkConns, wrkRounds, wrkDuration,
		verdict("api/bare", apiBare, wrkTargetAPIBare), verdict("api/redis", apiRedis, wrkTargetAPIRedis), medianOf(p99))
	// The same ratios from the CPU each server spent per request: what the
	// throughput ratios come to when the servers are CPU-bound, and far less
	// moved by how much of a shared host each round happened to get.
	b.Logf("by CPU per request: api/bare median %.2f (min %.2f, max %.2f); api/redis median %.2f (min %.2f, max %.2f)",
		medianOf(cpuBare), slices.Min(cpuBare), slices.Max(cpuBare),
		medianOf(cpuRedis), slices.Min(cpuRedis), slices.Max(cpuRedis))
	// A regression shows in both figures; a round in which the host gave
	// one server less CPU than the others moves only the throughput.
	switch {
	case medianOf(apiBare) < wrkFailAPIBare && medianOf(cpuBare) < wrkFailAPIBare:
		b.Fatalf("api/bare = %.2f (by CPU %.2f): far below the target %.1f", medianOf(apiBare), medianOf(cpuBare), wrkTargetAPIBare)
	case medianOf(apiRedis) < wrkFailAPIRedis && medianOf(cpuRedis) < wrkFailAPIRedis:
		b.Fatalf("api/redis = %.2f (by CPU %.2f): far below the target %.1f", medianOf(apiRedis), medianOf(cpuRedis), wrkTargetAPIRedis)
	}
}

type wrkTarget struct {
	name string
	url  string
	pids []int     // the processes serving it: their CPU time is its cost
	rps  []float64 // per round
	cpu  []float64 // per round: CPU µs per request of pids
}

// echoServer is a running comparison server.
type echoServer struct {
	addr string
	pid  int
}

// startEchoBench runs this test binary again as a comparison server and
// waits until it answers; it is stopped when the benchmark ends.
func startEchoBench(b *testing.B, dir, name string, spec echoBenchSpec) echoServer {
	b.Helper()
	spec.Listen = fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(b))
	js, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv(echoBenchEnv, string(js))
	p := redistest.StartProcess(b, os.Args[0], []string{"-test.run=^$"}, filepath.Join(dir, name+".log"))
	b.Setenv(echoBenchEnv, "")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", spec.Listen, time.Second)
		if err == nil {
			_ = c.Close()
			return echoServer{addr: spec.Listen, pid: p.Pid()}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s server on %s not up: %v", name, spec.Listen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisServerPID asks redis-server for its process id.
func redisServerPID(rdb *redis.Client) (int, error) {
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO: %w", err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("redis INFO server has no process_id")
}

// wrkResult is what one wrk run measured.
type wrkResult struct {
	rps      float64
	requests int64
	p99      time.Duration
}

// processCPU returns the CPU time (user and system, all threads) pid has used,
// from /proc/PID/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func processCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("CPU time of process %d: %v", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("CPU time of process %d: short /proc stat %q", pid, raw)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("CPU time of process %d: bad /proc stat %q", pid, raw)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// measure runs wrk against t for d and returns what it measured, adding
// the round's throughput and CPU cost per request to t.
func (t *wrkTarget) measure(b *testing.B, wrk string, d time.Duration) wrkResult {
	b.Helper()
	cpu := func() (sum time.Duration) {
		for _, pid := range t.pids {
			sum += processCPU(b, pid)
		}
		return sum
	}
	before := cpu()
	r := runWrk(b, wrk, t.url, d)
	used := cpu() - before
	t.rps = append(t.rps, r.rps)
	t.cpu = append(t.cpu, float64(used.Microseconds())/float64(r.requests))
	return r
}

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkCount   = regexp.MustCompile(`(?m)^\s+([0-9]+) requests in `)
	wrkP99     = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\b`)
	wrkErrors  = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses|Socket errors):.*$`)
	wrkHeaders = []string{"Authorization: Bearer " + wrkKey}
)

// runWrk runs wrk against url for d and parses its throughput and p99. Any
// non-2xx answer or socket error fails the benchmark: a ratio of failures
// measures nothing.
func runWrk(b *testing.B, wrk, url string, d time.Duration) wrkResult {
	b.Helper()
	args := []string{"-t" + strconv.Itoa(wrkThreads), "-c" + strconv.Itoa(wrkConns),
		"-d" + strconv.Itoa(int(d/time.Second)) + "s", "--latency"}
	for _, h := range wrkHeaders {
		args = append(args, "-H", h)
	}
	out, err := exec.Command(wrk, append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if m := wrkErrors.FindString(string(out)); m != "" {
		b.Fatalf("wrk %s: %s\n%s", url, strings.TrimSpace(m), out)
	}
	m := wrkRPS.FindSubmatch(out)
	n := wrkCount.FindSubmatch(out)
	if m == nil || n == nil {
		b.Fatalf("wrk %s: no Requests/sec or request count in\n%s", url, out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	requests, _ := strconv.ParseInt(string(n[1]), 10, 64)
	var p99 time.Duration
	if m := wrkP99.FindSubmatch(out); m != nil {
		p99, _ = time.ParseDuration(string(m[1]) + string(m[2]))
	}
	return wrkResult{rps: rps, requests: requests, p99: p99}
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
