package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// The process tests run the real binary, built once per test run.
var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(echoBenchEnv); spec != "" {
		os.Exit(runEchoBench(spec)) // a comparison server of BenchmarkServeWrk
	}
	dir, err := os.MkdirTemp("", "wxbroker-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// wxbrokerBinary builds ./cmd/wxbroker on first use.
func wxbrokerBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(binDir, "wxbroker")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is one wxbroker process under test.
type proc struct {
	name    string
	base    string // http://127.0.0.1:port
	cmd     *exec.Cmd
	logPath string
	proxy   *countingProxy
	exited  chan struct{}
	exitErr error
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// startProc runs `wxbroker args...` with its stderr in a file; the process is
// killed when the test ends.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, logPath: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(wxbrokerBinary(t), args...)
	p.cmd.Stderr = logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		_ = logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("--- %s log tail ---\n%s", name, p.logTail())
		}
	})
	return p
}

// countingProxy sits between one process and the simulator so that every
// credential call can be attributed to the process that made it.
type countingProxy struct {
	url   string
	mu    sync.Mutex
	calls []time.Time // credential calls
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cp := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/ticket/getticket":
			cp.mu.Lock()
			cp.calls = append(cp.calls, time.Now())
			cp.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	cp.url = "http://" + ln.Addr().String()
	return cp
}

func (cp *countingProxy) count() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.calls)
}

const (
	tAppStable  = "wx1000000000000001"
	tAppClassic = "wx1000000000000002"
	tKey        = "process-test-key"
	tLockTTL    = 3 * time.Second
)

func writeServeConfig(t *testing.T, name string, port int, redisAddr, prefix, baseURL string) string {
	t.Helper()
	yaml := fmt.Sprintf(`instance_id: %s
listen: 127.0.0.1:%d
log: {level: info, format: json}
redis: {addrs: [%q], key_prefix: %s}
leader: {lock_ttl: %s, renew_interval: 1s}
wechat: {base_url: %q, fallback_urls: [], timeout: 1s}
refresh: {before_expiry: 8s, jitter: 5%%, stable_rotation_window: 8s, force_min_interval: 1s}
namespaces:
  prod:
    apps:
      - {appid: %s, secret: secret-stable, kind: miniprogram, token_mode: stable}
      - {appid: %s, secret: secret-classic, kind: official_account, token_mode: classic, tickets: [jsapi]}
clients:
  - {name: tester, key_sha256: %s, allow: ["*/*"], admin: true}
`, name, port, redisAddr, prefix, tLockTTL, baseURL, tAppStable, tAppClassic, config.HashKey(tKey))
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var httpc = &http.Client{Timeout: 2 * time.Second}

func httpGet(base, path, key string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

var leaderGauge = regexp.MustCompile(`(?m)^wxbroker_leader (\S+)$`)

// isLeader reads wxbroker_leader from the process's /metrics.
func isLeader(p *proc) bool {
	code, body, err := httpGet(p.base, "/metrics", "")
	if err != nil || code != 200 {
		return false
	}
	m := leaderGauge.FindSubmatch(body)
	return m != nil && string(m[1]) == "1"
}

// waitFor is waittest.For, named as these tests have always called it.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	return waittest.For(t, what, timeout, cond)
}

// reader reads both apps' tokens from one process until stopped, and
// records every error, every token the simulator does not accept and every
// expired one.
type reader struct {
	p      *proc
	sim    *wechattest.Server
	stop   chan struct{}
	done   chan struct{}
	reads  atomic.Int64
	mu     sync.Mutex
	errors []string
}

func startReader(p *proc, sim *wechattest.Server) *reader {
	r := &reader{p: p, sim: sim, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			for _, app := range []string{tAppStable, tAppClassic} {
				r.readOnce(app)
			}
			time.Sleep(10 * time.Millisecond) // pace the reads; they run until halted
		}
	}()
	return r
}

func (r *reader) readOnce(app string) {
	code, body, err := httpGet(r.p.base, "/v1/namespaces/prod/apps/"+app+"/access_token", tKey)
	r.reads.Add(1)
	fail := func(format string, args ...any) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errors = append(r.errors, fmt.Sprintf("%s %s %s: ", time.Now().Format("15:04:05.000"), r.p.name, app)+fmt.Sprintf(format, args...))
	}
	if err != nil || code != 200 {
		fail("read = %d %s %v", code, body, err)
		return
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		ExpiresAt   string `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		fail("body %s: %v", body, err)
		return
	}
	exp, err := time.Parse(time.RFC3339, tok.ExpiresAt)
	if err != nil || !exp.After(time.Now().Add(-time.Second)) {
		fail("expired or bad expires_at %q", tok.ExpiresAt)
	}
	if !r.sim.TokenValid(app, tok.AccessToken) {
		fail("token not accepted by WeChat (expires_in %d)", tok.ExpiresIn)
	}
}

// waitReads waits until r has made n more reads, so that the next step of a
// test happens while reads are under way rather than after a guessed delay.
func (r *reader) waitReads(t *testing.T, n int64) {
	t.Helper()
	from := r.reads.Load()
	waitFor(t, fmt.Sprintf("%d reads from %s", n, r.p.name), 20*time.Second, func() bool { return r.reads.Load() >= from+n })
}

func (r *reader) halt() []string {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errors
}

// TestServeFailover runs three serve processes against one redis-server and
// one simulator, then kills, pauses and stops leaders while readers read.
func TestServeFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: starts wxbroker serve processes; run without -short")
	}
	wxbrokerBinary(t)
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{
		TokenTTL: 20 * time.Second, Overlap: 5 * time.Second, RotationWindow: 8 * time.Second,
		ForceMinInterval: time.Second, TicketTTL: 20 * time.Second,
	})
	t.Cleanup(sim.Close)
	sim.AddApp(tAppStable, "secret-stable")
	sim.AddApp(tAppClassic, "secret-classic")

	prefix := fmt.Sprintf("wxbt%d", time.Now().UnixNano()%1e6)
	procs := make([]*proc, 3)
	for i := range procs {
		name := fmt.Sprintf("p%d", i)
		port := redistest.FreePort(t)
		proxy := newCountingProxy(t, sim.URL)
		cfgPath := writeServeConfig(t, name, port, rs.Addr, prefix, proxy.url)
		p := startProc(t, name, "serve", "--config", cfgPath)
		p.base = "http://127.0.0.1:" + strconv.Itoa(port)
		p.proxy = proxy
		procs[i] = p
	}
	for _, p := range procs {
		waitFor(t, p.name+" ready", 20*time.Second, func() bool {
			code, _, err := httpGet(p.base, "/readyz", "")
			return err == nil && code == 200
		})
	}
	var leader *proc
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for _, p := range procs {
			if isLeader(p) {
				leader = p
				return true
			}
		}
		return false
	})
	others := func(except ...*proc) []*proc {
		var out []*proc
	next:
		for _, p := range procs {
			for _, e := range except {
				if p == e {
					continue next
				}
			}
			out = append(out, p)
		}
		return out
	}
	leaderAmong := func(ps []*proc) *proc {
		for _, p := range ps {
			if isLeader(p) {
				return p
			}
		}
		return nil
	}

	// 1. SIGKILL the leader: a survivor leads within lock_ttl + 1s, readers see nothing.
	survivors := others(leader)
	readers := map[*proc]*reader{}
	for _, p := range survivors {
		readers[p] = startReader(p, sim)
	}
	for _, r := range readers {
		r.waitReads(t, 20)
	}
	leader.signal(t, syscall.SIGKILL)
	var second *proc
	took := waitFor(t, "a new leader after SIGKILL", tLockTTL+5*time.Second, func() bool {
		second = leaderAmong(survivors)
		return second != nil
	})
	t.Logf("SIGKILL %s: %s leads after %s (lock_ttl %s)", leader.name, second.name, took.Round(time.Millisecond), tLockTTL)
	if took > tLockTTL+time.Second {
		t.Errorf("new leader after %s; want within lock_ttl + 1s = %s", took, tLockTTL+time.Second)
	}

	// 2. SIGSTOP the new leader past the lock TTL, then SIGCONT: once
	// resumed it makes no credential call and does not lead.
	third := others(leader, second)[0]
	if errs := readers[second].halt(); len(errs) > 0 {
		t.Errorf("reads from %s failed:\n%s", second.name, strings.Join(errs, "\n"))
	}
	delete(readers, second)
	second.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()
	took = waitFor(t, third.name+" leads while "+second.name+" is stopped", tLockTTL+5*time.Second, func() bool { return isLeader(third) })
	t.Logf("SIGSTOP %s: %s leads after %s", second.name, third.name, took.Round(time.Millisecond))
	// Stay stopped long enough that a refresh fell due on the stopped
	// leader's schedule: this sleep is the pause the test is about.
	time.Sleep(time.Until(stoppedAt.Add(2*tLockTTL + 2*time.Second)))
	before := second.proxy.count()
	second.signal(t, syscall.SIGCONT)
	resumed := time.Now()
	waitFor(t, second.name+" steps down after SIGCONT", 10*time.Second, func() bool { return !isLeader(second) })
	// Watch the resumed process for 2 s: an absence of calls can only be
	// observed over a span of time, and a deposed leader's refresh would
	// fire at once.
	time.Sleep(time.Until(resumed.Add(2 * time.Second)))
	if after := second.proxy.count(); after != before {
		t.Errorf("%s made %d credential call(s) after SIGCONT; a deposed leader must make none", second.name, after-before)
	}
	if !isLeader(third) || isLeader(second) {
		t.Errorf("after SIGCONT: %s leader=%v, %s leader=%v; want only %s", third.name, isLeader(third), second.name, isLeader(second), third.name)
	}
	readers[second] = startReader(second, sim)

	// 3. SIGTERM the leader: it releases the lock, the other takes over well before lock_ttl.
	readers[second].waitReads(t, 20)
	if errs := readers[third].halt(); len(errs) > 0 {
		t.Errorf("reads from %s failed:\n%s", third.name, strings.Join(errs, "\n"))
	}
	delete(readers, third)
	third.signal(t, syscall.SIGTERM)
	termAt := time.Now()
	took = waitFor(t, second.name+" leads after SIGTERM", tLockTTL+5*time.Second, func() bool { return isLeader(second) })
	t.Logf("SIGTERM %s: %s leads after %s", third.name, second.name, took.Round(time.Millisecond))
	if took >= tLockTTL {
		t.Errorf("takeover after SIGTERM took %s; a released lock should be taken well before lock_ttl %s", took, tLockTTL)
	}
	select {
	case <-third.exited:
		t.Logf("%s exited %s after SIGTERM", third.name, time.Since(termAt).Round(time.Millisecond))
		if third.exitErr != nil {
			t.Errorf("%s exit after SIGTERM: %v", third.name, third.exitErr)
		}
		// The buffered audit log was flushed on the way out.
		if log := third.logTail(); !strings.Contains(log, `"event":"access_token"`) {
			t.Errorf("%s's log holds no audit line after SIGTERM", third.name)
		}
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Errorf("%s did not exit after SIGTERM", third.name)
	}
	for _, r := range readers {
		r.waitReads(t, 20) // reads go on after the takeover
	}
	for p, r := range readers {
		if errs := r.halt(); len(errs) > 0 {
			t.Errorf("reads from %s failed:\n%s", p.name, strings.Join(errs, "\n"))
		}
		t.Logf("%s: %d reads", p.name, r.reads.Load())
	}
}

var curlToken = regexp.MustCompile(`^curl -sS -H 'Authorization: Bearer ([^']+)' (http://\S+/access_token)$`)

// TestDevPrintsWorkingCurl starts `wxbroker dev` and runs the printed token
// curl line through net/http.
func TestDevPrintsWorkingCurl(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: starts wxbroker dev; run without -short")
	}
	bin := wxbrokerBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "dev", "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0")
	logPath := filepath.Join(t.TempDir(), "dev.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var out strings.Builder
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if m := curlToken.FindStringSubmatch(line); m != nil {
				select {
				case found <- [2]string{m[1], m[2]}:
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("dev log:\n%s", b)
		}
	})
	var key, u string
	select {
	case m := <-found:
		key, u = m[0], m[1]
	case err := <-exited:
		t.Fatalf("dev exited before printing the token curl line: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev printed no token curl line within 30s")
	}
	code, body, err := httpGet(u, "", key)
	if err != nil || code != 200 || !strings.Contains(string(body), `"access_token":"`) {
		t.Fatalf("printed token curl: %d %s %v", code, body, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("dev exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not exit after SIGTERM")
	}
	for _, want := range []string{"DEVELOPMENT ONLY", "/tickets/jsapi", "/v1/status", "/metrics", "/cgi-bin/token", "/login"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev banner lacks %q", want)
		}
	}
}

func TestDevConfigValid(t *testing.T) {
	for _, public := range []string{"127.0.0.1:8081", ""} {
		cfg, err := devConfig("127.0.0.1:8080", public, "127.0.0.1:6379", "http://127.0.0.1:9999", "k", wechattest.Component{})
		if err != nil {
			t.Fatalf("devConfig(public %q): %v", public, err)
		}
		if got := len(cfg.NamespaceNames()); got != 2 {
			t.Errorf("namespaces = %d; want 2", got)
		}
		if cfg.LoginEnabled() != (public != "") {
			t.Errorf("public %q: LoginEnabled = %v", public, cfg.LoginEnabled())
		}
	}
	if code, _, _ := runCmd(t, "dev", "--listen", "0.0.0.0:8080"); code != exitUsage {
		t.Errorf("dev on 0.0.0.0 = exit %d; want %d (loopback only)", code, exitUsage)
	}
}
