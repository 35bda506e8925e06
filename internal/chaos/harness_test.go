//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
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
)

const (
	appStable  = "wx2000000000000001"
	appClassic = "wx2000000000000002"
	clientKey  = "chaos-client-key"
	apiToken   = "token"        // the simulator's name of /cgi-bin/token
	apiStable  = "stable_token" // and of /cgi-bin/stable_token

	tokenTTL     = 20 * time.Second
	overlap      = 5 * time.Second
	beforeExpiry = 8 * time.Second

	// propagation is how long after a new token is minted the replicas may
	// still hand out the token it killed: the leader's write and the pub/sub
	// message to every replica. It matters only when a fetch kills a token
	// at once (WeChat's token two generations old, after a fetch whose
	// answer was lost); every read after its token died is still counted
	// and printed.
	propagation = 250 * time.Millisecond
)

// appAPI is the credential API each app's tokens come from.
var appAPI = map[string]string{appClassic: apiToken, appStable: apiStable}

// timing is a deployment's leader and WeChat timing.
type timing struct {
	lockTTL, renew, wechatTimeout time.Duration
}

var defaultTiming = timing{lockTTL: 3 * time.Second, renew: time.Second, wechatTimeout: 1500 * time.Millisecond}

func binary(t *testing.T) string {
	t.Helper()
	b := os.Getenv("WXBROKER_BIN")
	if b == "" {
		t.Fatal("WXBROKER_BIN is not set: run `make chaos`, which builds bin/wxbroker and runs this suite")
	}
	if _, err := os.Stat(b); err != nil {
		t.Fatalf("WXBROKER_BIN: %v", err)
	}
	return b
}

var httpc = &http.Client{Timeout: time.Second}

func getJSON(u string, key string, out any) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
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
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if out != nil && resp.StatusCode == 200 {
		err = json.Unmarshal(b, out)
	}
	return resp.StatusCode, b, err
}

// waitFor is waittest.For, named as these tests have always called it.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	return waittest.For(t, what, timeout, cond)
}

// sim is the `wxbroker sim` process.
type sim struct {
	url string
}

func startSim(t *testing.T, dir string) *sim {
	t.Helper()
	port := redistest.FreePort(t)
	redistest.StartProcess(t, binary(t), []string{"sim", "--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--app", appStable + ":secret-stable", "--app", appClassic + ":secret-classic",
		"--token-ttl", tokenTTL.String(), "--overlap", overlap.String()}, filepath.Join(dir, "sim.log"))
	s := &sim{url: "http://127.0.0.1:" + strconv.Itoa(port)}
	waitFor(t, "the simulator", 20*time.Second, func() bool {
		code, _, err := getJSON(s.url+"/sim/stats", "", nil)
		return err == nil && code == 200
	})
	return s
}

// calls returns the simulator's call count of api for appid.
func (s *sim) calls(t *testing.T, api, appid string) int {
	t.Helper()
	var st struct {
		Calls  map[string]map[string]int `json:"calls"`
		Tokens map[string]int            `json:"tokens"`
	}
	if code, b, err := getJSON(s.url+"/sim/stats", "", &st); err != nil || code != 200 {
		t.Fatalf("simulator stats: %d %s %v", code, b, err)
	}
	return st.Calls[api][appid]
}

// minted returns how many tokens the simulator minted for appid.
func (s *sim) minted(t *testing.T, appid string) int {
	t.Helper()
	var st struct {
		Tokens map[string]int `json:"tokens"`
	}
	if code, b, err := getJSON(s.url+"/sim/stats", "", &st); err != nil || code != 200 {
		t.Fatalf("simulator stats: %d %s %v", code, b, err)
	}
	return st.Tokens[appid]
}

// fault queues a fault for the next n calls of api (see /sim/faults).
func (s *sim) fault(t *testing.T, api string, n int, f map[string]any) {
	t.Helper()
	body := map[string]any{"api": api, "n": n}
	for k, v := range f {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	resp, err := httpc.Post(s.url+"/sim/faults", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("queue fault: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("queue fault %s: status %d", b, resp.StatusCode)
	}
}

// death asks the simulator when tok dies; known is false for a token it
// never issued to appid.
func (s *sim) death(appid, tok string) (deadAt time.Time, known bool, err error) {
	var out struct {
		Valid  bool      `json:"valid"`
		DeadAt time.Time `json:"dead_at"`
	}
	code, b, err := getJSON(s.url+"/sim/token_valid?"+url.Values{"appid": {appid}, "token": {tok}}.Encode(), "", &out)
	if err != nil || code != 200 {
		return time.Time{}, false, fmt.Errorf("token_valid: %d %s %v", code, b, err)
	}
	return out.DeadAt, !out.DeadAt.IsZero(), nil
}

// broker is one `wxbroker serve` process (a slot: a restart replaces proc).
type broker struct {
	name string
	base string
	pub  string // public listener (event URL) base, when the deployment has a component
	cfg  string
	log  string
	proc *redistest.Process
	down atomic.Bool // killed or stopped by the scenario: not read, not sampled
}

// deployment is a simulator, a Redis topology and the brokers using it.
type deployment struct {
	t       *testing.T
	dir     string
	sim     *sim
	tm      timing
	redis   string // the YAML of the redis: key
	prefix  string
	mu      sync.Mutex
	brokers []*broker
	rec     *recorder
	starts  atomic.Int64 // processes started, to name their log files
	op      bool         // configure the Open Platform component (openplatform_test.go) and public_listen
}

func newDeployment(t *testing.T, tm timing, redisYAML string) *deployment {
	t.Helper()
	d := &deployment{t: t, dir: t.TempDir(), tm: tm, redis: redisYAML, prefix: "chaos"}
	d.sim = startSim(t, d.dir)
	d.rec = newRecorder(d)
	t.Cleanup(d.rec.stop)
	return d
}

func (d *deployment) writeConfig(name string, port, pubPort int) string {
	components, allow, public := "", `["*/*"]`, ""
	if d.op {
		components, allow, public = opConfig()
		public = fmt.Sprintf(public, pubPort)
	}
	yaml := fmt.Sprintf(`instance_id: %s
listen: 127.0.0.1:%d
log: {level: info, format: json}
redis: %s
leader: {lock_ttl: %s, renew_interval: %s}
wechat: {base_url: %q, fallback_urls: [], timeout: %s}
refresh: {before_expiry: %s, jitter: 5%%, stable_rotation_window: %s, force_min_interval: 1s}
namespaces:
  prod:
    apps:
      - {appid: %s, secret: secret-stable, kind: miniprogram, token_mode: stable}
      - {appid: %s, secret: secret-classic, kind: official_account, token_mode: classic}
%sclients:
  - {name: chaos, key_sha256: %s, allow: %s, admin: true}
%s`, name, port, d.redis, d.tm.lockTTL, d.tm.renew, d.sim.url, d.tm.wechatTimeout, beforeExpiry, beforeExpiry,
		appStable, appClassic, components, config.HashKey(clientKey), allow, public)
	path := filepath.Join(d.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		d.t.Fatal(err)
	}
	return path
}

// addBroker starts one more broker and waits until it is ready.
func (d *deployment) addBroker() *broker {
	d.t.Helper()
	d.mu.Lock()
	name := fmt.Sprintf("b%d", len(d.brokers))
	d.mu.Unlock()
	port, pubPort := redistest.FreePort(d.t), 0
	b := &broker{name: name, base: "http://127.0.0.1:" + strconv.Itoa(port)}
	if d.op {
		pubPort = redistest.FreePort(d.t)
		b.pub = "http://127.0.0.1:" + strconv.Itoa(pubPort)
	}
	b.cfg = d.writeConfig(name, port, pubPort)
	d.start(b)
	d.mu.Lock()
	d.brokers = append(d.brokers, b)
	d.mu.Unlock()
	return b
}

func (d *deployment) start(b *broker) {
	d.t.Helper()
	b.log = filepath.Join(d.dir, fmt.Sprintf("%s.%d.log", b.name, d.starts.Add(1)))
	b.proc = redistest.StartProcess(d.t, binary(d.t), []string{"serve", "--config", b.cfg}, b.log)
	waitFor(d.t, b.name+" ready", 30*time.Second, func() bool {
		code, _, err := getJSON(b.base+"/readyz", "", nil)
		return err == nil && code == 200
	})
	b.down.Store(false)
}

// restart starts a killed broker again (same name, port and config).
func (d *deployment) restart(b *broker) {
	d.t.Helper()
	b.proc.Kill()
	d.start(b)
}

func (d *deployment) kill(b *broker) {
	b.down.Store(true)
	d.rec.note("SIGKILL " + b.name)
	b.proc.Kill()
}

func (d *deployment) stop(b *broker) {
	b.down.Store(true)
	d.rec.note("SIGSTOP " + b.name)
	if err := b.proc.Signal(syscall.SIGSTOP); err != nil {
		d.t.Fatalf("SIGSTOP %s: %v", b.name, err)
	}
}

func (d *deployment) cont(b *broker) {
	d.rec.note("SIGCONT " + b.name)
	if err := b.proc.Signal(syscall.SIGCONT); err != nil {
		d.t.Fatalf("SIGCONT %s: %v", b.name, err)
	}
	b.down.Store(false)
}

func (d *deployment) live() []*broker {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*broker
	for _, b := range d.brokers {
		if !b.down.Load() {
			out = append(out, b)
		}
	}
	return out
}

var (
	leaderRe = regexp.MustCompile(`(?m)^wxbroker_leader (\S+)$`)
	epochRe  = regexp.MustCompile(`(?m)^wxbroker_leader_epoch (\S+)$`)
)

// leaderState scrapes one broker's /metrics.
func leaderState(b *broker) (leader bool, epoch int64, ok bool) {
	code, body, err := getJSON(b.base+"/metrics", "", nil)
	if err != nil || code != 200 {
		return false, 0, false
	}
	if m := leaderRe.FindSubmatch(body); m != nil {
		leader = string(m[1]) == "1"
	}
	if m := epochRe.FindSubmatch(body); m != nil {
		f, _ := strconv.ParseFloat(string(m[1]), 64)
		epoch = int64(f)
	}
	return leader, epoch, true
}

// leader waits for a live broker that leads and returns it.
func (d *deployment) leader(timeout time.Duration) *broker {
	d.t.Helper()
	var l *broker
	waitFor(d.t, "a leader", timeout, func() bool {
		for _, b := range d.live() {
			if is, _, _ := leaderState(b); is {
				l = b
				return true
			}
		}
		return false
	})
	return l
}

// awaitLeader waits for a live broker that leads and returns it, or nil
// after timeout: the figures then show the time without a leader.
func (d *deployment) awaitLeader(timeout time.Duration) *broker {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, b := range d.live() {
			if is, _, _ := leaderState(b); is {
				return b
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Errorf("no leader within %s", timeout)
	d.rec.note("no leader within " + timeout.String())
	return nil
}

// current returns the access token b serves for app.
func (d *deployment) current(b *broker, app string) string {
	d.t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	code, body, err := getJSON(b.base+"/v1/namespaces/prod/apps/"+app+"/access_token", clientKey, &tok)
	if err != nil || code != 200 {
		d.t.Fatalf("read %s from %s: %d %s %v", app, b.name, code, body, err)
	}
	return tok.AccessToken
}

// report posts a client's report that tok failed (the invalidate route) to
// b and returns the answer's status and body; 0 on a transport error.
func (d *deployment) report(b *broker, app, tok string) (int, string) {
	c := &http.Client{Timeout: 3 * d.tm.lockTTL}
	body, _ := json.Marshal(map[string]string{"access_token": tok})
	req, err := http.NewRequest(http.MethodPost, b.base+"/v1/namespaces/prod/apps/"+app+"/access_token/invalidate", strings.NewReader(string(body)))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b2, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b2)
}

// waitCall waits until the simulator has received more than from calls of
// api for appid and returns when it noticed.
func (d *deployment) waitCall(api, appid string, from int, timeout time.Duration) time.Time {
	d.t.Helper()
	waitFor(d.t, fmt.Sprintf("a %s call for %s", api, appid), timeout, func() bool { return d.sim.calls(d.t, api, appid) > from })
	return time.Now()
}

// up starts n brokers, waits for a leader and for both tokens on every
// replica, then starts the readers and the leader sampler and begins
// measuring.
func (d *deployment) up(n int) {
	d.t.Helper()
	for range n {
		d.addBroker()
	}
	d.leader(30 * time.Second)
	for _, b := range d.live() {
		for _, app := range []string{appStable, appClassic} {
			waitFor(d.t, b.name+" serves "+app, 30*time.Second, func() bool {
				code, _, err := getJSON(b.base+"/v1/namespaces/prod/apps/"+app+"/access_token", clientKey, nil)
				return err == nil && code == 200
			})
		}
	}
	d.rec.run()
	d.rec.waitReads(d.t, 30)
	d.rec.begin(d.t)
}

// tokenSeen is what the readers know of one served token.
type tokenSeen struct {
	app   string
	first time.Time
}

// recorder runs the readers and the leader sampler and keeps the figures.
type recorder struct {
	d        *deployment
	halt     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu           sync.Mutex
	measuring    bool
	started      time.Time
	reads        int
	readErrors   map[string]int // "503", "transport", ...
	zeroExpires  int
	invalid      int           // reads of a token dead for more than propagation
	afterDeath   int           // reads of a token dead before the read began
	invalidLate  time.Duration // longest time after its death a token was served
	invalidLog   []string
	unknownToks  int
	tokens       map[string]*tokenSeen
	known        map[string]bool // tokens seen before the measurement began
	callsAt      map[string]int  // simulator calls per app when the measurement began
	callsEnd     map[string]int
	overlapRound int
	overlapLog   []string
	noLeaderFrom time.Time // zero: a leader was seen in the last sample
	gaps         []time.Duration
	maxEpoch     int64
	backwards    []string
	terms        map[int64]string // epoch → the broker that led with it
	flagged      map[string]bool  // broker+epoch already in backwards
	events       []string
	extraMin     map[string]int // unavoidable calls the scenario caused (faults, lost calls)
	az           *azReads       // authorizer reads (openplatform_test.go); nil: apps only
}

func newRecorder(d *deployment) *recorder {
	return &recorder{d: d, halt: make(chan struct{}), readErrors: map[string]int{}, tokens: map[string]*tokenSeen{},
		known: map[string]bool{}, terms: map[int64]string{}, flagged: map[string]bool{}, extraMin: map[string]int{}}
}

func (r *recorder) note(ev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, time.Now().Format("15:04:05.000")+" "+ev)
}

// run starts one reader per broker slot (it follows restarts and new
// brokers) and the sampler.
func (r *recorder) run() {
	r.wg.Go(r.readLoop)
	r.wg.Go(r.sampleLoop)
}

func (r *recorder) stop() {
	r.stopOnce.Do(func() { close(r.halt) })
	r.wg.Wait()
}

func (r *recorder) readLoop() {
	var wg sync.WaitGroup
	started := map[*broker]bool{}
	for {
		select {
		case <-r.halt:
			wg.Wait()
			return
		case <-time.After(100 * time.Millisecond):
		}
		r.d.mu.Lock()
		for _, b := range r.d.brokers {
			if !started[b] {
				started[b] = true
				wg.Go(func() { r.readBroker(b) })
			}
		}
		r.d.mu.Unlock()
	}
}

func (r *recorder) readBroker(b *broker) {
	for {
		select {
		case <-r.halt:
			return
		case <-time.After(25 * time.Millisecond):
		}
		for _, app := range []string{appClassic, appStable} {
			if !b.down.Load() {
				r.readOnce(b, app)
			}
		}
		if r.az != nil && !b.down.Load() {
			r.readAuthorizer(b)
		}
	}
}

func (r *recorder) readOnce(b *broker, app string) {
	start := time.Now()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	code, body, err := getJSON(b.base+"/v1/namespaces/prod/apps/"+app+"/access_token", clientKey, &tok)
	if b.down.Load() {
		return // stopped or killed while the read was under way
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	switch {
	case err != nil && code == 0:
		r.readErrors["transport"]++
		return
	case code != 200:
		r.readErrors[strconv.Itoa(code)]++
		return
	case err != nil:
		r.readErrors["bad body"]++
		return
	}
	if tok.ExpiresIn <= 0 {
		r.zeroExpires++
		r.invalidLog = append(r.invalidLog, fmt.Sprintf("%s %s %s: 200 with expires_in %d: %s", start.Format("15:04:05.000"), b.name, app, tok.ExpiresIn, body))
	}
	if _, ok := r.tokens[tok.AccessToken]; !ok {
		r.tokens[tok.AccessToken] = &tokenSeen{app: app, first: start}
	}
	r.mu.Unlock()
	deadAt, known, serr := r.d.sim.death(app, tok.AccessToken)
	r.mu.Lock()
	switch {
	case serr != nil:
		r.readErrors["simulator check"]++
	case !known:
		r.unknownToks++
		r.invalidLog = append(r.invalidLog, fmt.Sprintf("%s %s %s: token the simulator never issued", start.Format("15:04:05.000"), b.name, app))
	case deadAt.Before(start):
		// Dead before the read even began: the overlap is already part of
		// deadAt, so this is a token served beyond the overlap.
		late := start.Sub(deadAt)
		r.afterDeath++
		if late > propagation {
			r.invalid++
		}
		r.invalidLate = max(r.invalidLate, late)
		if len(r.invalidLog) < 20 {
			r.invalidLog = append(r.invalidLog, fmt.Sprintf("%s %s %s: token dead for %s (expires_in %d)", start.Format("15:04:05.000"), b.name, app, late.Round(time.Millisecond), tok.ExpiresIn))
		}
	}
}

// sampleLoop scrapes every live broker's leader gauge and epoch every 50 ms.
func (r *recorder) sampleLoop() {
	for {
		select {
		case <-r.halt:
			return
		case <-time.After(50 * time.Millisecond):
		}
		live := r.d.live()
		type st struct {
			b      *broker
			leader bool
			epoch  int64
			ok     bool
		}
		res := make([]st, len(live))
		var wg sync.WaitGroup
		for i, b := range live {
			wg.Go(func() {
				l, e, ok := leaderState(b)
				res[i] = st{b, l, e, ok && !b.down.Load()}
			})
		}
		wg.Wait()
		now := time.Now()
		var leaders []st
		for _, s := range res {
			if s.ok && s.leader {
				leaders = append(leaders, s)
			}
		}
		r.mu.Lock()
		if len(leaders) == 0 {
			if r.noLeaderFrom.IsZero() {
				r.noLeaderFrom = now
			}
		} else {
			if !r.noLeaderFrom.IsZero() {
				if r.measuring {
					r.gaps = append(r.gaps, now.Sub(r.noLeaderFrom))
				}
				r.noLeaderFrom = time.Time{}
			}
		}
		if len(leaders) > 1 && r.measuring {
			r.overlapRound++
			var names []string
			for _, l := range leaders {
				names = append(names, fmt.Sprintf("%s(epoch %d)", l.b.name, l.epoch))
			}
			if len(r.overlapLog) < 10 {
				r.overlapLog = append(r.overlapLog, now.Format("15:04:05.000")+" "+strings.Join(names, " + "))
			}
		}
		for _, l := range leaders {
			prev, seen := r.terms[l.epoch]
			switch {
			case !r.measuring:
			case seen && prev != l.b.name && !r.flagged[fmt.Sprint(l.b.name, l.epoch)]:
				r.flagged[fmt.Sprint(l.b.name, l.epoch)] = true
				r.backwards = append(r.backwards, fmt.Sprintf("%s %s leads with epoch %d, which %s led with before", now.Format("15:04:05.000"), l.b.name, l.epoch, prev))
			case !seen && l.epoch <= r.maxEpoch:
				r.backwards = append(r.backwards, fmt.Sprintf("%s %s leads with epoch %d after epoch %d was seen", now.Format("15:04:05.000"), l.b.name, l.epoch, r.maxEpoch))
			}
			if !seen {
				r.terms[l.epoch] = l.b.name
			}
			r.maxEpoch = max(r.maxEpoch, l.epoch)
		}
		r.mu.Unlock()
	}
}

func (r *recorder) waitReads(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	from := r.reads
	r.mu.Unlock()
	waitFor(t, fmt.Sprintf("%d reads", n), 30*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.reads >= from+n
	})
}

// seen returns how many distinct tokens of app the readers have seen.
func (r *recorder) seen(app string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.tokens {
		if s.app == app {
			n++
		}
	}
	return n
}

// begin starts the measured window: figures before it (start-up) do not count.
func (r *recorder) begin(t *testing.T) {
	calls := map[string]int{}
	for app, api := range appAPI {
		calls[app] = r.d.sim.calls(t, api, app)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measuring = true
	r.started = time.Now()
	r.reads, r.zeroExpires, r.invalid, r.afterDeath, r.unknownToks, r.invalidLate = 0, 0, 0, 0, 0, 0
	r.readErrors = map[string]int{}
	for tok := range r.tokens {
		r.known[tok] = true
	}
	r.callsAt = calls
	if r.az != nil {
		r.az.begin()
	}
	r.maxEpoch = 0
	for e := range r.terms {
		r.maxEpoch = max(r.maxEpoch, e)
	}
}

// unavoidable records calls the scenario forces on app beyond one per
// token served: injected faults, calls lost with the process that made them.
func (r *recorder) unavoidable(app string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.extraMin[app] += n
}

// figures are one scenario's measurements.
type figures struct {
	name        string
	window      time.Duration
	reads       int
	readErrors  map[string]int
	zeroExpires int
	invalid     int
	afterDeath  int
	unknownToks int
	invalidLate time.Duration
	overlaps    int
	maxGap      time.Duration
	gaps        []time.Duration
	gapLimit    time.Duration
	terms       int
	backwards   []string
	calls, min  map[string]int
	log         []string
	overlapLog  []string
	events      []string
}

// finish ends the measured window, stops the readers and the sampler, and
// returns the scenario's figures; gapLimit is its target for the time
// without a leader.
func (r *recorder) finish(t *testing.T, name string, gapLimit time.Duration) figures {
	t.Helper()
	calls := map[string]int{}
	for app, api := range appAPI {
		calls[app] = r.d.sim.calls(t, api, app) - r.callsAt[app]
	}
	// Let the readers see what the last calls minted.
	time.Sleep(time.Second)
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	f := figures{
		name: name, window: time.Since(r.started), reads: r.reads, readErrors: r.readErrors,
		zeroExpires: r.zeroExpires, invalid: r.invalid, afterDeath: r.afterDeath, unknownToks: r.unknownToks, invalidLate: r.invalidLate,
		overlaps: r.overlapRound, gaps: r.gaps, gapLimit: gapLimit, backwards: r.backwards,
		calls: calls, min: map[string]int{}, log: r.invalidLog, overlapLog: r.overlapLog, events: r.events,
	}
	if !r.noLeaderFrom.IsZero() {
		f.gaps = append(f.gaps, time.Since(r.noLeaderFrom)) // still without a leader
	}
	for _, g := range f.gaps {
		f.maxGap = max(f.maxGap, g)
	}
	for e := range r.terms {
		if e > 0 {
			f.terms++
		}
	}
	for tok, s := range r.tokens {
		if !r.known[tok] {
			f.min[s.app]++
		}
	}
	for app, n := range r.extraMin {
		f.min[app] += n
	}
	return f
}

// check prints the figures as a table and fails the test on any target
// missed.
func (f figures) check(t *testing.T) {
	t.Helper()
	var b strings.Builder
	row := func(k, format string, args ...any) { fmt.Fprintf(&b, "  %-34s %s\n", k, fmt.Sprintf(format, args...)) }
	fmt.Fprintf(&b, "\n=== figures: %s (measured %s)\n", f.name, f.window.Round(100*time.Millisecond))
	errs := 0
	var kinds []string
	for k, n := range f.readErrors {
		errs += n
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(kinds)
	row("reads", "%d", f.reads)
	row("read errors", "%d %v", errs, kinds)
	row("200 with expires_in <= 0", "%d", f.zeroExpires)
	row("reads of a dead token", "%d (longest %s after its death; the overlap counts as alive)", f.afterDeath+f.unknownToks, f.invalidLate.Round(time.Millisecond))
	row("... dead for more than "+propagation.String(), "%d (target 0)", f.invalid+f.unknownToks)
	row("leader overlaps (split brain)", "%d samples", f.overlaps)
	var gaps []string
	for _, g := range f.gaps {
		gaps = append(gaps, g.Round(10*time.Millisecond).String())
	}
	row("time without a leader", "longest %s (target <= %s); gaps %v", f.maxGap.Round(10*time.Millisecond), f.gapLimit, gaps)
	row("distinct leader epochs", "%d; epoch reused or backwards: %d", f.terms, len(f.backwards))
	for _, app := range []string{appClassic, appStable} {
		row("credential calls "+map[string]string{appClassic: "classic", appStable: "stable"}[app], "%d (minimum %d)", f.calls[app], f.min[app])
	}
	t.Log(b.String())
	fail := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{f.name}, args...)...) }
	if f.invalid+f.unknownToks > 0 {
		fail("%d reads of a token dead for more than %s:\n%s", f.invalid+f.unknownToks, propagation, strings.Join(f.log, "\n"))
	}
	if f.zeroExpires > 0 {
		fail("%d answers 200 with expires_in <= 0", f.zeroExpires)
	}
	if f.overlaps > 0 {
		fail("split brain in %d samples:\n%s", f.overlaps, strings.Join(f.overlapLog, "\n"))
	}
	if f.maxGap > f.gapLimit {
		fail("no leader for %s; target <= %s", f.maxGap, f.gapLimit)
	}
	if len(f.backwards) > 0 {
		fail("epoch reused or went backwards (it no longer identifies a term):\n%s", strings.Join(f.backwards, "\n"))
	}
	for app, n := range f.calls {
		if d := n - f.min[app]; d > 1 || d < -1 {
			fail("%s: %d credential calls; minimum %d (want within one)", app, n, f.min[app])
		}
	}
	if t.Failed() {
		t.Logf("events:\n%s", strings.Join(f.events, "\n"))
	}
}

// redisCLI runs redis-cli with args.
func redisCLI(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s (redis-cli comes with redis-tools; `make deps` installs it)", strings.Join(args, " "), err, out)
	}
	return string(out)
}
