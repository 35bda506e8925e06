package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The read-path ratio benchmark drives its servers from a separate process,
// as wrk would: the test binary runs itself again with loadgenEnv set, and
// TestMain turns that process into a load generator. A load generator in the
// benchmark's own process would share its scheduler and garbage collector
// with the servers it measures, and the Go HTTP client costs about as much
// CPU per request as the server, which flattens every ratio towards 1.
//
// The generator is deliberately lean, and runs with GOMAXPROCS=1 (like wrk
// with one thread) so that its scheduler does not spin for work on both
// cores: keep-alive connections over loopback,
// one request in flight per connection (no pipelining: services do not
// pipeline either), a request written from a prepared byte slice and the
// response parsed only as far as its status and Content-Length.

// loadgenEnv carries a JSON loadSpec to the child process.
const loadgenEnv = "WXBROKER_BENCH_LOADGEN"

func TestMain(m *testing.M) {
	if spec := os.Getenv(loadgenEnv); spec != "" {
		os.Exit(runLoadgen(spec, os.Stdout))
	}
	os.Exit(m.Run())
}

// loadSpec is what one load-generator run does.
type loadSpec struct {
	Addr     string        `json:"addr"`
	Request  []byte        `json:"request"` // one raw HTTP/1.1 request
	Conns    int           `json:"conns"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
}

// loadResult is what it measured after the warm-up.
type loadResult struct {
	Requests int64         `json:"requests"`
	Elapsed  time.Duration `json:"elapsed"`
	Errors   []string      `json:"errors,omitempty"`
	// Latency histogram: microseconds → count (latencies above
	// maxLatencyMicros are counted in that bucket).
	Latency map[int]int64 `json:"latency"`
}

const maxLatencyMicros = 1_000_000

func runLoadgen(specJSON string, out io.Writer) int {
	var spec loadSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: bad spec:", err)
		return 2
	}
	res := generateLoad(spec)
	if err := json.NewEncoder(out).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	return 0
}

// generateLoad keeps spec.Conns requests in flight for the warm-up and then
// for spec.Duration, and reports the second part.
func generateLoad(spec loadSpec) loadResult {
	start := time.Now()
	measureFrom := start.Add(spec.Warmup)
	end := measureFrom.Add(spec.Duration)
	type connResult struct {
		n   int64
		lat map[int]int64
		err error
	}
	results := make([]connResult, spec.Conns)
	var wg sync.WaitGroup
	for i := range spec.Conns {
		wg.Go(func() {
			r := &results[i]
			r.lat = map[int]int64{}
			r.n, r.err = loadConn(spec, measureFrom, end, r.lat)
		})
	}
	wg.Wait()
	res := loadResult{Elapsed: end.Sub(measureFrom), Latency: map[int]int64{}}
	for _, r := range results {
		res.Requests += r.n
		for k, v := range r.lat {
			res.Latency[k] += v
		}
		if r.err != nil && len(res.Errors) < 5 {
			res.Errors = append(res.Errors, r.err.Error())
		}
	}
	return res
}

// loadConn runs one keep-alive connection until end and counts the requests
// completed after measureFrom.
func loadConn(spec loadSpec, measureFrom, end time.Time, lat map[int]int64) (int64, error) {
	conn, err := net.Dial("tcp", spec.Addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 16<<10)
	var n int64
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			return n, nil
		}
		if _, err := conn.Write(spec.Request); err != nil {
			return n, fmt.Errorf("write: %w", err)
		}
		if err := readResponse(br); err != nil {
			return n, err
		}
		if t0.After(measureFrom) {
			n++
			us := int(time.Since(t0) / time.Microsecond)
			lat[min(us, maxLatencyMicros)]++
		}
	}
}

var contentLength = []byte("content-length:")

// readResponse reads one response and requires status 200 and a
// Content-Length.
func readResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	if len(line) < 12 || string(line[9:12]) != "200" {
		return fmt.Errorf("status line %q", bytes.TrimSpace(line))
	}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read header: %w", err)
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):])))
			if err != nil {
				return fmt.Errorf("content-length %q", line)
			}
		}
	}
	if length < 0 {
		return fmt.Errorf("response without content-length")
	}
	_, err = br.Discard(length)
	return err
}

// load is what one server variant achieved over all rounds.
type load struct {
	n       int64
	elapsed time.Duration
	lat     map[int]int64
}

func (l *load) add(r loadResult) {
	l.n += r.Requests
	l.elapsed += r.Elapsed
	if l.lat == nil {
		l.lat = map[int]int64{}
	}
	for k, v := range r.Latency {
		l.lat[k] += v
	}
}

func (l *load) rps() float64 { return float64(l.n) / l.elapsed.Seconds() }

// quantile of the latency histogram, in microseconds.
func (l *load) quantile(q float64) float64 {
	keys := make([]int, 0, len(l.lat))
	var total int64
	for k, v := range l.lat {
		keys = append(keys, k)
		total += v
	}
	sort.Ints(keys)
	want := int64(q * float64(total))
	var seen int64
	for _, k := range keys {
		seen += l.lat[k]
		if seen > want {
			return float64(k)
		}
	}
	return 0
}

// runLoadProcess runs the load generator in a child process against spec.Addr.
func runLoadProcess(b *testing.B, spec loadSpec) loadResult {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("find the test binary: %v", err)
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.Warmup+spec.Duration+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), loadgenEnv+"="+string(specJSON), "GOMAXPROCS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("load generator: %v\n%s", err, stderr.Bytes())
	}
	var res loadResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		b.Fatalf("load generator output %q: %v", stdout.Bytes(), err)
	}
	if len(res.Errors) > 0 {
		b.Fatalf("load generator against %s: %v", spec.Addr, res.Errors)
	}
	return res
}
