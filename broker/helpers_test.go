package broker

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const testNS = "prod"

func appID(i int) string { return fmt.Sprintf("wx%016x", 0xa0000+i) }

func secretOf(appid string) string { return "secret-" + appid }

func classicApp(i int, tickets ...string) *config.App {
	return &config.App{AppID: appID(i), Secret: config.Secret(secretOf(appID(i))), Kind: config.KindOfficialAccount,
		TokenMode: config.ModeClassic, Tickets: tickets}
}

func stableApp(i int, tickets ...string) *config.App {
	a := classicApp(i, tickets...)
	a.TokenMode = config.ModeStable
	a.Kind = config.KindMiniProgram
	return a
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// testConfig is a config with short leader timings and the given apps in
// namespace "prod"; its key prefix is unique to the test.
func testConfig(t testing.TB, apps ...*config.App) *config.Config {
	cfg := config.Default()
	cfg.InstanceID = "test"
	cfg.Redis.KeyPrefix = "t-" + nonWord.ReplaceAllString(t.Name(), "-")
	cfg.Leader = config.Leader{LockTTL: 1500 * time.Millisecond, RenewInterval: 300 * time.Millisecond}
	cfg.WeChat.Timeout = 400 * time.Millisecond
	cfg.Refresh.Concurrency = 8
	cfg.Refresh.ForceMinInterval = 0
	cfg.Refresh.ForceDailyCap = 20
	cfg.Refresh.StableRotationWindow = time.Second
	cfg.Namespaces = map[string]*config.Namespace{testNS: {Apps: apps}}
	return cfg
}

// env is one Redis and one simulated WeChat shared by the brokers of a test.
type env struct {
	t     testing.TB
	redis *redistest.Server
	sim   *wechattest.Server
	cfg   *config.Config
	opts  wechattest.Options
}

func newEnv(t testing.TB, simOpts wechattest.Options, cfg *config.Config) *env {
	t.Helper()
	return newEnvWith(t, redistest.Start(t), simOpts, cfg)
}

func newEnvWith(t testing.TB, rs *redistest.Server, simOpts wechattest.Options, cfg *config.Config) *env {
	t.Helper()
	sim := wechattest.NewServer(simOpts)
	t.Cleanup(sim.Close)
	for _, ns := range cfg.Namespaces {
		for _, a := range ns.Apps {
			sim.AddApp(a.AppID, secretOf(a.AppID))
		}
	}
	return &env{t: t, redis: rs, sim: sim, cfg: cfg, opts: simOpts}
}

// node is one running broker.
type node struct {
	hook   redis.Hook    // added to the node's Redis client
	setup  func(*Broker) // called before Run
	b      *Broker
	m      *metrics.Metrics
	reg    *prometheus.Registry
	wx     *countingWeChat
	pw     *countingPlatform // the Open Platform calls (openplatform_test.go)
	logs   *observer.ObservedLogs
	rdb    *redis.Client
	cancel context.CancelFunc
	done   chan struct{}
}

type nodeOpt func(*node, *redis.Options)

// start runs a broker named name against the env.
func (e *env) start(name string, opts ...nodeOpt) *node {
	t := e.t
	t.Helper()
	ropts := &redis.Options{Addr: e.redis.Addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 1}
	n := &node{}
	for _, o := range opts {
		o(n, ropts)
	}
	n.rdb = redis.NewClient(ropts)
	if n.hook != nil {
		n.rdb.AddHook(n.hook)
	}
	t.Cleanup(func() { _ = n.rdb.Close() })
	client, err := wechat.New(wechat.Options{BaseURL: e.sim.URL, Timeout: e.cfg.WeChat.Timeout})
	if err != nil {
		t.Fatalf("wechat.New: %v", err)
	}
	n.wx = &countingWeChat{inner: client}
	n.pw = &countingPlatform{inner: client}
	core, logs := observer.New(zapcore.DebugLevel)
	n.logs = logs
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Core())).Named(name)
	n.reg = prometheus.NewRegistry()
	n.m = metrics.New(n.reg)
	b, err := New(Options{Config: e.cfg, Redis: n.rdb, WeChat: n.wx, PlatformWeChat: n.pw, Logger: log, Metrics: n.m, InstanceID: name})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.backoffMin = 50 * time.Millisecond
	b.backoffMax = 400 * time.Millisecond
	b.tick = 20 * time.Millisecond
	b.reconcileEvery = 500 * time.Millisecond
	b.pollEvery = 50 * time.Millisecond
	if e.opts.Overlap > 0 {
		b.overlap = e.opts.Overlap
	}
	n.b = b
	if n.setup != nil {
		n.setup(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		if err := b.Run(ctx); err != nil {
			t.Errorf("Run(%s) = %v", name, err)
		}
	}()
	t.Cleanup(n.stop)
	return n
}

// stop cancels Run and waits for it to return.
func (n *node) stop() {
	n.cancel()
	<-n.done
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leader waits for exactly one of nodes to lead and returns it.
func leader(t testing.TB, within time.Duration, nodes ...*node) *node {
	t.Helper()
	var l *node
	waitFor(t, within, "a leader", func() bool {
		l = nil
		count := 0
		for _, n := range nodes {
			if n.b.IsLeader() {
				l, count = n, count+1
			}
		}
		return count == 1
	})
	return l
}

// token waits until n serves a valid access token for appid and returns it.
func token(t testing.TB, n *node, appid string) Token {
	t.Helper()
	var tok Token
	waitFor(t, 30*time.Second, "an access token for "+appid, func() bool {
		var err error
		tok, err = n.b.AccessToken(testNS, appid)
		return err == nil
	})
	return tok
}

// countingWeChat counts the credential calls one broker makes and can hold
// them.
type countingWeChat struct {
	inner   WeChat
	tokens  atomic.Int64
	stables atomic.Int64
	forced  atomic.Int64
	tickets atomic.Int64
	checks  atomic.Int64           // token checks (get_api_domain_ip)
	last    atomic.Pointer[string] // last classic token received

	mu     sync.Mutex
	before func(api string) // called before each call when set
}

func (c *countingWeChat) hook(api string) {
	c.mu.Lock()
	h := c.before
	c.mu.Unlock()
	if h != nil {
		h(api)
	}
}

func (c *countingWeChat) Token(ctx context.Context, appID, secret string) (wechat.Token, error) {
	c.tokens.Add(1)
	c.hook(wechat.APIToken)
	tok, err := c.inner.Token(ctx, appID, secret)
	if err == nil {
		c.last.Store(&tok.AccessToken)
	}
	return tok, err
}

func (c *countingWeChat) StableToken(ctx context.Context, appID, secret string, force bool) (wechat.Token, error) {
	c.stables.Add(1)
	if force {
		c.forced.Add(1)
	}
	c.hook(wechat.APIStableToken)
	return c.inner.StableToken(ctx, appID, secret, force)
}

func (c *countingWeChat) Ticket(ctx context.Context, accessToken, typ string) (wechat.Ticket, error) {
	c.tickets.Add(1)
	c.hook(wechat.APIGetTicket)
	return c.inner.Ticket(ctx, accessToken, typ)
}

func (c *countingWeChat) APIDomainIP(ctx context.Context, accessToken string) ([]string, error) {
	c.checks.Add(1)
	c.hook(wechat.APIDomainIP)
	return c.inner.APIDomainIP(ctx, accessToken)
}

func (c *countingWeChat) total() int64 {
	return c.tokens.Load() + c.stables.Load() + c.tickets.Load()
}

// logged reports whether an entry with message msg (at level or above) names appid.
func logged(logs *observer.ObservedLogs, level zapcore.Level, msg, appid string) bool {
	for _, e := range logs.FilterMessageSnippet(msg).All() {
		if e.Level < level {
			continue
		}
		if e.ContextMap()["appid"] == appid && e.ContextMap()["namespace"] == testNS {
			return true
		}
	}
	return false
}

// noSecrets fails if any log entry of n contains a secret or a full token.
func noSecrets(t testing.TB, n *node, secrets ...string) {
	t.Helper()
	for _, e := range n.logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("log entry %q leaks %q", e.Message, s)
			}
		}
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }

// These tests pin down the invariants of docs/ARCHITECTURE.md, each tagged
// "(invariant N)" with the rule's number there, that the scenario tests
// elsewhere exercise only in passing: each fails if the invariant it names is
// broken (they were checked against mutations of the broker).

// withClock makes the node's broker follow clock.
func withClock(clock *clocktest.Clock) nodeOpt {
	return func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.now = clock.Now }
	}
}

// settle waits until the leader has queued every item for a time after the
// clock's: a refresh still finishing when the clock jumps would take the jump
// for a token that came back already due.
func settle(t *testing.T, n *node, clock *clocktest.Clock) {
	t.Helper()
	waitFor(t, 30*time.Second, "the scheduler to settle", func() bool {
		tm := n.b.el.term.Load()
		if tm == nil {
			return false
		}
		for _, it := range n.b.catalog().items {
			if due := tm.sched().scheduledAt(it); due.IsZero() || !due.After(clock.Now()) {
				return false
			}
		}
		return true
	})
}

// refreshErrors is wxbroker_token_refresh_total{result="error"} for appid's
// access token.
func refreshErrors(n *node, appid string) float64 {
	return testutil.ToFloat64(n.m.TokenRefresh.WithLabelValues(testNS, appid, KindAccessToken, metrics.ResultError))
}

// testWrite writes a record for it under fence f the way the leader's save
// does (same keeps the generation, gen is the one the leader knows; settles
// also removes the app's credential-call intent), without the cache.
func testWrite(ctx context.Context, b *Broker, f fence, it *item, value string, exp, at time.Time, src string, same bool, gen int64, settles ...bool) (*record, error) {
	r := &record{Value: value, ExpiresAt: exp, FetchedAt: at, Src: src}
	return b.store.writeRecord(ctx, f, writeOf(it, r, same, gen, len(settles) > 0 && settles[0], b.now()))
}
