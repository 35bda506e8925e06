package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
)

// DESIGN §9: a token read through the full API (auth, ACL, audit, metrics)
// must reach ≥ 0.9× the throughput of a bare echo handler returning the same
// JSON and ≥ 1.8× an echo handler doing one Redis GET per request, with p99
// within 1.2× of the bare handler's. All three run in one benchmark, over
// real loopback HTTP with keep-alive, so that the ratios compare like with
// like on whatever machine runs them.

// benchParallelism multiplies GOMAXPROCS for the client goroutines, enough
// to keep the server busy.
const benchParallelism = 8

type benchTokenJSON struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Generation  int64  `json:"generation"`
}

func benchTarget(b *testing.B, h http.Handler) (url string, client *http.Client) {
	b.Helper()
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	b.Cleanup(tr.CloseIdleConnections)
	return srv.URL + tokenPath("prod", appA), &http.Client{Transport: tr}
}

// load is what one handler achieved: requests, time and latencies.
type load struct {
	n   int
	d   time.Duration
	lat []time.Duration
}

func (l *load) rps() float64 { return float64(l.n) / l.d.Seconds() }

func (l *load) p99() time.Duration {
	slices.Sort(l.lat)
	return l.lat[len(l.lat)*99/100]
}

// run performs b.N GETs in parallel and adds them to l.
func (l *load) run(b *testing.B, url string, client *http.Client, key string) {
	b.Helper()
	var mu sync.Mutex
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		lat := make([]time.Duration, 0, 1024)
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		for pb.Next() {
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		l.lat = append(l.lat, lat...)
		mu.Unlock()
	})
	l.d += time.Since(start)
	l.n += b.N
}

// benchRounds interleaves the three handlers so that drift in the machine's
// load (other processes, thermal) hits all of them alike.
const benchRounds = 3

func BenchmarkTokenReadRatios(b *testing.B) {
	reg := prometheus.NewRegistry()
	fake := newFake()
	now := func() time.Time { return testNow }
	a, err := New(Options{
		Tokens: fake, Config: testConfig(), Logger: zap.NewNop(), Metrics: metrics.New(reg),
		Gatherer: reg, AuditWriter: io.Discard, Now: now,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })

	tok := fake.tokens[appKey{"prod", appA}]
	answer := benchTokenJSON{
		AccessToken: tok.AccessToken, ExpiresIn: secondsLeft(tok.ExpiresAt, testNow),
		ExpiresAt: tok.ExpiresAt.UTC().Format(time.RFC3339), Generation: tok.Generation,
	}
	bare := echo.New()
	bare.GET("/v1/namespaces/:ns/apps/:appid/access_token", func(c echo.Context) error {
		return c.JSON(http.StatusOK, answer)
	})

	rs := redistest.Start(b)
	rdb := rs.Client(b)
	if err := rdb.Set(context.Background(), "bench:token", tok.AccessToken, 0).Err(); err != nil {
		b.Fatal(err)
	}
	withRedis := echo.New()
	withRedis.GET("/v1/namespaces/:ns/apps/:appid/access_token", func(c echo.Context) error {
		v, err := rdb.Get(c.Request().Context(), "bench:token").Result()
		if err != nil {
			return err
		}
		out := answer
		out.AccessToken = v
		return c.JSON(http.StatusOK, out)
	})

	apiURL, apiClient := benchTarget(b, a.Handler())
	bareURL, bareClient := benchTarget(b, bare)
	redisURL, redisClient := benchTarget(b, withRedis)
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	var api, bareL, redisL load
	for range benchRounds {
		api.run(b, apiURL, apiClient, keyOrder)
		bareL.run(b, bareURL, bareClient, keyOrder)
		redisL.run(b, redisURL, redisClient, keyOrder)
	}
	b.StopTimer()
	if b.Failed() {
		return
	}
	apiRPS, bareRPS, redisRPS := api.rps(), bareL.rps(), redisL.rps()
	apiP99, bareP99, redisP99 := api.p99(), bareL.p99(), redisL.p99()

	b.ReportMetric(apiRPS, "api_req/s")
	b.ReportMetric(bareRPS, "bare_req/s")
	b.ReportMetric(redisRPS, "redis_req/s")
	b.ReportMetric(apiRPS/bareRPS, "api/bare")
	b.ReportMetric(apiRPS/redisRPS, "api/redis")
	b.ReportMetric(float64(apiP99.Microseconds()), "api_p99_µs")
	b.ReportMetric(float64(bareP99.Microseconds()), "bare_p99_µs")
	b.ReportMetric(float64(redisP99.Microseconds()), "redis_p99_µs")
	b.ReportMetric(float64(apiP99)/float64(bareP99), "p99_api/bare")
}

// BenchmarkHandlerTokenRead measures the handler alone (no network): the
// cost the API adds per read, and its allocations.
func BenchmarkHandlerTokenRead(b *testing.B) {
	reg := prometheus.NewRegistry()
	a, err := New(Options{
		Tokens: newFake(), Config: testConfig(), Logger: zap.NewNop(), Metrics: metrics.New(reg),
		AuditWriter: io.Discard, Now: func() time.Time { return testNow },
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	h := a.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, tokenPath("prod", appA), nil)
		req.Header.Set("Authorization", "Bearer "+keyOrder)
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != http.StatusOK {
				b.Errorf("status %d", w.code)
				return
			}
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
