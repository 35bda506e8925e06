package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
)

// BenchmarkGatewayRatios measures the WeChat API gateway side by side with a
// plain httputil.ReverseProxy forwarding to the same upstream, in one run:
// throughput ratio (target ≥ 0.8×) and p50 added latency (target ≤ 0.3 ms),
// driven from the separate load-generator process of the token-read
// benchmark, in interleaved rounds of alternating order; then memory with
// 1000 concurrent slow uploads through each (skipped with -short).
func BenchmarkGatewayRatios(b *testing.B) {
	const (
		rounds      = 15 // short, many rounds: a burst of other work hits few of them
		duration    = 500 * time.Millisecond
		targetRatio = 0.8
		targetAdded = 300.0 // µs
		failRatio   = 0.6
	)
	upstreamBody := []byte(`{"errcode":0,"errmsg":"ok"}`)
	upstream := benchUpstream(b, upstreamBody)

	a := benchGatewayAPI(b, upstream)
	target, _ := url.Parse(upstream)
	// The plain proxy gets the gateway's connection pool settings and copy
	// buffer pool: with http.DefaultTransport's 2 idle connections per host
	// it would open a connection per request, and without a BufferPool it
	// allocates 32 KiB per answer; it would lose for reasons that are not
	// the gateway's own work.
	plain := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		BufferPool: copyBuffers{},
		Transport:  &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
	}
	variants := []struct {
		name string
		addr string
		l    load
	}{
		{name: "gateway", addr: benchServe(b, a, a.Handler())},
		{name: "plain", addr: benchServe(b, a, plain)},
	}
	payload := `{"touser":"o1","msgtype":"text","text":{"content":"hello"}}`
	request := []byte("POST /cgi-bin/message/custom/send?access_token=" + tokenA + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
		"User-Agent: wxbroker-bench\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(payload)) + "\r\n\r\n" + payload)

	b.ResetTimer()
	var ratios, added []float64 // added: p50 difference under load, per round (logged only)
	for round := range rounds {
		var r [2]loadResult
		for i := range variants {
			if round%2 == 1 {
				i = len(variants) - 1 - i
			}
			v := &variants[i]
			r[i] = runLoadProcess(b, loadSpec{Addr: v.addr, Request: request, Conns: benchConns,
				Warmup: benchWarmup, Duration: duration})
			v.l.add(r[i])
		}
		var gw, pl load
		gw.add(r[0])
		pl.add(r[1])
		ratios = append(ratios, gw.rps()/pl.rps())
		added = append(added, gw.quantile(0.5)-pl.quantile(0.5))
	}
	// Added latency is measured without queueing: one connection, one
	// request at a time, so p50 is the time a request spends in the proxy
	// and the upstream, not waiting for a busy CPU behind 31 others.
	var lat [2]load
	for round := range rounds {
		for i := range variants {
			if round%2 == 1 {
				i = len(variants) - 1 - i
			}
			lat[i].add(runLoadProcess(b, loadSpec{Addr: variants[i].addr, Request: request, Conns: 1,
				Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond}))
		}
	}
	b.StopTimer()
	gw, pl := &variants[0].l, &variants[1].l
	ratio := median(ratios)
	add := lat[0].quantile(0.5) - lat[1].quantile(0.5)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(0, "B/op")
	b.ReportMetric(0, "allocs/op")
	b.ReportMetric(gw.rps(), "gateway_req/s")
	b.ReportMetric(pl.rps(), "plain_req/s")
	b.ReportMetric(ratio, "gateway/plain")
	b.ReportMetric(gw.quantile(0.5), "gateway_p50_µs")
	b.ReportMetric(pl.quantile(0.5), "plain_p50_µs")
	b.ReportMetric(lat[0].quantile(0.5), "gateway_1conn_p50_µs")
	b.ReportMetric(lat[1].quantile(0.5), "plain_1conn_p50_µs")
	b.ReportMetric(add, "p50_added_µs")
	b.ReportMetric(gw.quantile(0.99), "gateway_p99_µs")
	b.ReportMetric(pl.quantile(0.99), "plain_p99_µs")
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	b.Logf("gateway vs plain httputil.ReverseProxy: throughput with %d connections, median of %d rounds of %s: %.2f× "+
		"(target ≥ %.1f×): %s; p50 added with 1 connection (%.0f vs %.0f µs): %.0f µs (target ≤ %.0f µs): %s",
		benchConns, rounds, duration, ratio, targetRatio, verdict(ratio >= targetRatio),
		lat[0].quantile(0.5), lat[1].quantile(0.5), add, targetAdded, verdict(add <= targetAdded))
	b.Logf("per round, %d connections: gateway/plain %s; p50 difference µs %s", benchConns, fmtRatios(ratios), fmtRatios(added))
	if ratio < failRatio {
		b.Fatalf("gateway/plain = %.2f: far below the target %.1f", ratio, targetRatio)
	}

	if testing.Short() {
		b.Log("slow-upload memory run skipped (-short)")
		return
	}
	const uploads, size = 1000, 64 << 10
	for _, v := range []struct {
		name string
		h    http.Handler
	}{{"plain", plain}, {"gateway", a.Handler()}} {
		addr := benchServe(b, a, v.h)
		heap, rss, errs := slowUploads(b, addr, "/cgi-bin/media/upload?type=image&access_token="+tokenA, uploads, size)
		b.ReportMetric(float64(heap)/(1<<20), v.name+"_upload_peak_heap_MiB")
		b.ReportMetric(float64(rss)/(1<<20), v.name+"_upload_peak_rss_MiB")
		b.Logf("%d concurrent slow uploads of %d KiB through %s: peak heap +%.1f MiB over idle, peak RSS %.1f MiB, %d failed",
			uploads, size>>10, v.name, float64(heap)/(1<<20), float64(rss)/(1<<20), errs)
		if errs > 0 {
			b.Errorf("%s: %d of %d slow uploads failed", v.name, errs, uploads)
		}
	}
}

// benchUpstream is a fast stand-in for WeChat: it reads the body and
// answers body with a Content-Length.
func benchUpstream(b *testing.B, body []byte) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	length := []string{strconv.Itoa(len(body))}
	ctype := []string{"application/json; encoding=utf-8"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = length
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// benchGatewayAPI is the API over the fake TokenSource (no Redis: the
// gateway's hot path never asks Redis for a known token), forwarding to
// upstream, with its audit log in a real file as in production.
func benchGatewayAPI(b *testing.B, upstream string) *API {
	b.Helper()
	cfg := testConfig()
	cfg.WeChat.BaseURL = upstream
	cfg.WeChat.FallbackURLs = nil
	auditFile, err := os.Create(b.TempDir() + "/audit.log")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = auditFile.Close() })
	a, err := New(Options{Tokens: newFake(), Config: cfg, Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()),
		AuditWriter: auditFile, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	return a
}

// slowUploads runs n uploads of size bytes at once against addr, each
// trickling its body in 4 KiB pieces over about 2.5 s, and returns the peak
// heap in use above the level before they started, the peak RSS of the
// process, and how many uploads did not get a 200.
func slowUploads(b *testing.B, addr, path string, n, size int) (heap, rss uint64, failed int64) {
	b.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peakHeap, peakRSS atomic.Uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse - base)
			}
			if r := currentRSS(); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	})
	const piece = 4 << 10
	pieces := size / piece
	every := 2500 * time.Millisecond / time.Duration(pieces)
	chunk := make([]byte, piece)
	var fails atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := slowUpload(addr, path, size, chunk, pieces, every); err != nil {
				fails.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	return peakHeap.Load(), peakRSS.Load(), fails.Load()
}

func slowUpload(addr, path string, size int, chunk []byte, pieces int, every time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	head := "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Length: " + strconv.Itoa(size) + "\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		return err
	}
	for range pieces {
		time.Sleep(every)
		if _, err := conn.Write(chunk); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(line, " 200 ") {
		return fmt.Errorf("status %q", line)
	}
	return nil
}

// currentRSS reads the process's resident set size from /proc (0 where
// there is none).
func currentRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkGatewayHandler measures the gateway and a plain
// httputil.ReverseProxy in this process (handler called directly, upstream
// over loopback): the per-request cost the gateway adds, and allocations.
func BenchmarkGatewayHandler(b *testing.B) {
	upstream := benchUpstream(b, []byte(`{"errcode":0,"errmsg":"ok"}`))
	a := benchGatewayAPI(b, upstream)
	target, _ := url.Parse(upstream)
	plain := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		BufferPool: copyBuffers{},
		Transport:  &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
	}
	for _, v := range []struct {
		name string
		h    http.Handler
	}{{"gateway", a.Handler()}, {"plain", plain}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/cgi-bin/message/custom/send?access_token="+tokenA,
						strings.NewReader(`{"touser":"o1","msgtype":"text"}`))
					req.RemoteAddr = "127.0.0.1:1234"
					clear(w.h)
					w.code = 0
					v.h.ServeHTTP(w, req)
					if w.code != http.StatusOK {
						b.Errorf("status %d", w.code)
						return
					}
				}
			})
		})
	}
}
