package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

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
		tm := n.b.term.Load()
		if tm == nil {
			return false
		}
		for _, it := range n.b.items {
			if due := tm.sched.scheduledAt(it); due.IsZero() || !due.After(clock.Now()) {
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

// stuckRenewals makes one client's leader-lock renewals hang while on,
// ignoring their context: a Redis call that never returns.
type stuckRenewals struct {
	lockKey string
	on      atomic.Bool
	stuck   chan struct{} // closed when the first renewal hangs
	release chan struct{} // closed to let hung renewals go on
	once    sync.Once
	unonce  sync.Once
}

func newStuckRenewals(lockKey string) *stuckRenewals {
	return &stuckRenewals{lockKey: lockKey, stuck: make(chan struct{}), release: make(chan struct{})}
}

func (h *stuckRenewals) unblock() { h.unonce.Do(func() { close(h.release) }) }

// isRenewal recognises bsm/redislock's refresh script: EVALSHA sha 1 <lock>
// <value> <ttl> (obtain has one argument more, release and pttl one less;
// the fenced scripts name more keys).
func (h *stuckRenewals) isRenewal(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	return (name == "evalsha" || name == "eval") && len(args) == 6 &&
		fmt.Sprint(args[2]) == "1" && fmt.Sprint(args[3]) == h.lockKey
}

func (h *stuckRenewals) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stuckRenewals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() && h.isRenewal(cmd) {
			h.once.Do(func() { close(h.stuck) })
			<-h.release
		}
		return next(ctx, cmd)
	}
}

func (h *stuckRenewals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLeaseDeadline (invariant 1): a renewal that hangs in Redis does not keep a
// leader alive. Once less lease is left than WeChat's timeout, no credential
// call starts; at the local deadline the leader context is cancelled.
func TestLeaseDeadline(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Leader = config.Leader{LockTTL: 2 * time.Second, RenewInterval: 400 * time.Millisecond}
	cfg.WeChat.Timeout = 600 * time.Millisecond
	e := newEnv(t, wechattest.Options{}, cfg)
	h := newStuckRenewals(newKeys(cfg.Redis.KeyPrefix).lock())
	n := e.start("a", func(n *node, _ *redis.Options) { n.hook = h })
	t.Cleanup(h.unblock) // runs before the node stops (cleanups run last first)
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	tm := n.b.term.Load()

	h.on.Store(true)
	select {
	case <-h.stuck:
	case <-time.After(3 * time.Second):
		t.Fatal("no lock renewal reached Redis")
	}
	deadline := time.Now().Add(tm.lease.remaining())
	waitFor(t, 3*time.Second, "less lease left than the WeChat timeout", func() bool {
		return tm.lease.remaining() < cfg.WeChat.Timeout*3/4
	})
	calls := e.sim.Calls(wechat.APIToken, app.AppID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	cancel()
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - calls; got != 0 {
		t.Errorf("with %s of lease left (under the %s WeChat timeout) the leader made %d token calls; want 0 (Invalidate: %v)",
			tm.lease.remaining(), cfg.WeChat.Timeout, got, err)
	}
	select {
	case <-tm.ctx.Done():
	case <-time.After(time.Until(deadline) + time.Second):
		t.Fatalf("the leader context is still live %s after the local lease deadline", time.Since(deadline))
	}
	if cause := context.Cause(tm.ctx); !errors.Is(cause, errLeaseExpired) {
		t.Errorf("term ended by %v; want the lease deadline", cause)
	}
}

// TestFailedRenewalEndsTermAtOnce (invariant 1): a failed renewal cancels the
// leader context right away, long before the local lease deadline.
func TestFailedRenewalEndsTermAtOnce(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	cfg.Leader = config.Leader{LockTTL: 4 * time.Second, RenewInterval: 300 * time.Millisecond}
	e := newEnv(t, wechattest.Options{}, cfg)
	part := &partition{}
	n := e.start("a", func(n *node, _ *redis.Options) { n.hook = part })
	leader(t, 5*time.Second, n)
	token(t, n, app.AppID)
	tm := n.b.term.Load()
	part.on.Store(true)
	// The next renewal (within renew_interval) fails; the lease would last
	// 3.6 s more.
	select {
	case <-tm.ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatalf("the leader context is live 2s after its renewals began failing (lease left %s)", tm.lease.remaining())
	}
	if cause := context.Cause(tm.ctx); errors.Is(cause, errLeaseExpired) {
		t.Errorf("term ended by %v; want the failed renewal", cause)
	}
	if n.b.IsLeader() {
		t.Error("IsLeader() = true after the renewal failed")
	}
}

// TestFencedRejectionStepsDown (invariant 2): a leader whose write the fence
// rejects (a newer epoch exists) steps down instead of leading on with
// writes that can never land, and leadership resumes under a new epoch.
func TestFencedRejectionStepsDown(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	tm := n.b.term.Load()
	newer, err := e.redis.Client(t).Incr(context.Background(), n.b.store.keys.epoch()).Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := n.wx.total()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	select {
	case <-tm.ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the leader still leads after its write was fenced out")
	}
	if cause := context.Cause(tm.ctx); !errors.Is(cause, errFenced) {
		t.Errorf("term ended by %v; want errFenced", cause)
	}
	if v := testutil.ToFloat64(n.m.FencedWritesRejected); v < 1 {
		t.Errorf("wxbroker_fenced_writes_rejected_total = %v; want at least 1", v)
	}
	waitFor(t, 5*time.Second, "leadership under a newer epoch", func() bool {
		nt := n.b.term.Load()
		return nt != nil && nt != tm && nt.epoch > newer
	})
	// The report was handed on to the next term, which refreshed once.
	if err != nil || got.AccessToken == cur.AccessToken {
		t.Errorf("Invalidate = generation %d, %v; want a new token from the next term", got.Generation, err)
	}
	if d := n.wx.total() - calls; d != 1 {
		t.Errorf("%d credential calls for one invalidation; want 1 (none under the fenced term)", d)
	}
}

// TestStableInvalidationTriesNormalModeFirst (invariant 4): when a stable token
// fails because someone else forced a refresh, a normal-mode call already
// returns the newer token, so the broker spends no forced refresh.
func TestStableInvalidationTriesNormalModeFirst(t *testing.T) {
	app := stableApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{ForceMinInterval: time.Millisecond}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	laptop, err := wechat.New(wechat.Options{BaseURL: e.sim.URL})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := laptop.StableToken(context.Background(), app.AppID, secretOf(app.AppID), true)
	if err != nil {
		t.Fatalf("external forced refresh: %v", err)
	}
	if e.sim.TokenValid(app.AppID, cur.AccessToken) {
		t.Fatal("the broker's token survived the external forced refresh")
	}
	got, err := n.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	if err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if got.AccessToken != theirs.AccessToken {
		t.Errorf("Invalidate returned generation %d, not the token WeChat already hands out", got.Generation)
	}
	if f := n.wx.forced.Load(); f != 0 {
		t.Errorf("%d forced refreshes; want 0 (the normal-mode call returned a new token)", f)
	}
	if st := n.b.Status(context.Background()); st.Apps[0].ForcedToday != 0 {
		t.Errorf("forced_today = %d; want 0", st.Apps[0].ForcedToday)
	}
}

// TestQuotaCountsEveryCall (invariant 7): every credential call — token,
// stable_token, getticket, normal or forced — is counted per app on the UTC+8
// day, in Redis, in the quota gauge and in Status. The clock stands at 01:00
// UTC+8, still the previous day in UTC.
func TestQuotaCountsEveryCall(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 17, 0, 0, 0, time.UTC))
	const wechatDay = "20260302"
	classic, stable := classicApp(1, "jsapi"), stableApp(2)
	cfg := testConfig(t, classic, stable)
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	cur := token(t, n, classic.AppID)
	token(t, n, stable.AppID)
	var first Ticket
	waitFor(t, 5*time.Second, "the first ticket", func() bool {
		var err error
		first, err = n.b.Ticket(testNS, classic.AppID, "jsapi")
		return err == nil
	})
	// A forced (invalidation) fetch, and the ticket its token brings.
	if _, err := n.b.Invalidate(context.Background(), testNS, classic.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the second ticket", func() bool {
		tk, err := n.b.Ticket(testNS, classic.AppID, "jsapi")
		return err == nil && tk.Ticket != first.Ticket
	})

	rdb := e.redis.Client(t)
	st := n.b.Status(context.Background())
	for _, tc := range []struct {
		app  *config.App
		api  string
		want int
	}{
		{classic, wechat.APIToken, 2},
		{classic, wechat.APIGetTicket, 2},
		{stable, wechat.APIStableToken, 1},
	} {
		if got := e.sim.Calls(tc.api, tc.app.AppID); got != tc.want {
			t.Fatalf("simulator saw %d %s calls; want %d", got, tc.api, tc.want)
		}
		key := n.b.store.keys.quota(testNS, tc.app.AppID, tc.api, wechatDay)
		if got, err := rdb.Get(context.Background(), key).Int(); err != nil || got != tc.want {
			t.Errorf("%s = %d, %v; want %d (one per call, on the UTC+8 day)", key, got, err, tc.want)
		}
		if got := testutil.ToFloat64(n.m.WeChatQuotaUsed.WithLabelValues(testNS, tc.app.AppID, tc.api)); int(got) != tc.want {
			t.Errorf("wxbroker_wechat_quota_used{%s,%s} = %v; want %d", tc.app.AppID, tc.api, got, tc.want)
		}
		for _, a := range st.Apps {
			if a.AppID == tc.app.AppID && a.FetchesToday[tc.api] != int64(tc.want) {
				t.Errorf("Status fetches_today[%s] of %s = %d; want %d", tc.api, tc.app.AppID, a.FetchesToday[tc.api], tc.want)
			}
		}
	}
	key := n.b.store.keys.force(testNS, classic.AppID, wechatDay)
	if got, err := rdb.Get(context.Background(), key).Int(); err != nil || got != 1 {
		t.Errorf("%s = %d, %v; want 1 forced fetch", key, got, err)
	}
}

// TestExpiredNeverServed (invariant 3): while refreshes fail the cached token and
// ticket are served until they expire, and never after.
func TestExpiredNeverServed(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	app := classicApp(1, "jsapi")
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	tok := token(t, n, app.AppID)
	var tk Ticket
	waitFor(t, 5*time.Second, "a ticket", func() bool {
		var err error
		tk, err = n.b.Ticket(testNS, app.AppID, "jsapi")
		return err == nil
	})
	settle(t, n, clock)
	e.sim.Fail(wechat.APIToken, 1000, wechattest.Fault{Errcode: -1})
	e.sim.Fail(wechat.APIGetTicket, 1000, wechattest.Fault{Errcode: -1})

	end := tok.ExpiresAt
	if tk.ExpiresAt.After(end) {
		end = tk.ExpiresAt
	}
	clock.Set(end.Add(-time.Second))
	waitFor(t, 5*time.Second, "a failed refresh", func() bool { return refreshErrors(n, app.AppID) >= 1 })
	if got, err := n.b.AccessToken(testNS, app.AppID); err != nil || got.AccessToken != tok.AccessToken {
		t.Errorf("AccessToken 1s before expiry, refresh failing = generation %d, %v; want the cached token", got.Generation, err)
	}
	if got, err := n.b.Ticket(testNS, app.AppID, "jsapi"); err != nil || got.Ticket != tk.Ticket {
		t.Errorf("Ticket 1s before expiry, refresh failing = %v; want the cached ticket", err)
	}

	clock.Set(end)
	if got, err := n.b.AccessToken(testNS, app.AppID); !errors.Is(err, ErrNoToken) {
		t.Errorf("AccessToken at expiry = generation %d expiring %v, %v; want ErrNoToken", got.Generation, got.ExpiresAt, err)
	}
	if _, err := n.b.Ticket(testNS, app.AppID, "jsapi"); !errors.Is(err, ErrNoToken) {
		t.Errorf("Ticket at expiry = %v; want ErrNoToken", err)
	}
	if _, _, ok := n.b.AppByToken(tok.AccessToken); ok {
		t.Error("AppByToken accepts an expired token")
	}
	if err := n.b.Ready(); err == nil {
		t.Error("Ready() = nil with only an expired token")
	}
}

// countingHook counts the commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestReadsNeverTouchRedis (invariant 9): token, ticket and token-lookup reads are
// answered from the in-process cache without a single Redis command.
func TestReadsNeverTouchRedis(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	cfg := testConfig(t, classicApp(1, "jsapi"))
	b := idleBroker(t, cfg, rdb)
	f := leadership(t, b, rdb, "a")
	now := time.Now()
	e := b.apps[testNS][appID(1)]
	ctx := context.Background()
	if _, err := b.writeRecord(ctx, f, e.token, "tok-1", now.Add(time.Hour), now, "", false, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.writeRecord(ctx, f, e.tickets["jsapi"], "ticket-1", now.Add(time.Hour), now, shortHash("tok-1"), false, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	h := &countingHook{}
	rdb.AddHook(h)
	for range 100 {
		if tok, err := b.AccessToken(testNS, appID(1)); err != nil || tok.AccessToken != "tok-1" {
			t.Fatalf("AccessToken = %+v, %v", tok, err)
		}
		if tk, err := b.Ticket(testNS, appID(1), "jsapi"); err != nil || tk.Ticket != "ticket-1" {
			t.Fatalf("Ticket = %+v, %v", tk, err)
		}
		if _, _, ok := b.AppByToken("tok-1"); !ok {
			t.Fatal("AppByToken(current) = false")
		}
		if err := b.Ready(); err != nil {
			t.Fatalf("Ready() = %v", err)
		}
	}
	if got := h.n.Load(); got != 0 {
		t.Errorf("400 reads sent %d Redis commands; want 0", got)
	}
}

// TestRefreshSchedule (invariant 3): classic tokens fall due when before_expiry
// (25%) of their life is left, spread by up to jitter (10%) earlier; stable
// tokens inside WeChat's rotation window. Tokens fetched at the same instant
// do not fall due at the same instant.
func TestRefreshSchedule(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	var apps []*config.App
	for i := range 6 {
		apps = append(apps, classicApp(i+1))
	}
	stable := stableApp(7)
	apps = append(apps, stable)
	cfg := testConfig(t, apps...)
	cfg.Refresh.StableRotationWindow = 5 * time.Minute
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	tm := n.b.term.Load()
	now := clock.Now()
	dues := map[time.Time]bool{}
	for _, a := range apps {
		tok := token(t, n, a.AppID)
		if tok.ExpiresAt.Sub(now) != 7200*time.Second {
			t.Fatalf("token of %s expires at %v; want 7200 s after the frozen clock", a.AppID, tok.ExpiresAt)
		}
		it := n.b.apps[testNS][a.AppID].token
		var due time.Time
		waitFor(t, 5*time.Second, "the next refresh of "+a.AppID+" scheduled", func() bool {
			due = tm.sched.scheduledAt(it)
			return due.After(now)
		})
		lo, hi := now.Add(7200*time.Second*65/100), now.Add(7200*time.Second*75/100) // 25% left, up to 10% earlier
		if a == stable {
			lo, hi = tok.ExpiresAt.Add(-4*time.Minute), tok.ExpiresAt.Add(-3*time.Minute-30*time.Second) // 80% of the window left, jitter later
		}
		if due.Before(lo) || due.After(hi) {
			t.Errorf("%s (%s) due %s after the fetch; want %s..%s", a.AppID, a.TokenMode, due.Sub(now), lo.Sub(now), hi.Sub(now))
		}
		if a != stable {
			dues[due] = true
		}
	}
	if len(dues) != len(apps)-1 {
		t.Errorf("%d classic tokens fetched together fall due at %d distinct times; want %d (jitter)", len(apps)-1, len(dues), len(apps)-1)
	}
}

// TestRetryBackoff (invariant 3): failed refreshes back off exponentially on the
// broker's clock, and at least 60 s after 45011.
func TestRetryBackoff(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		lo, hi [2]time.Duration // bounds of the first and second wait
	}{
		// backoffMin is 50ms in tests, then doubling, ±20%.
		{"errcode -1", -1, [2]time.Duration{40 * time.Millisecond, 80 * time.Millisecond}, [2]time.Duration{60 * time.Millisecond, 120 * time.Millisecond}},
		{"45011 minute quota", 45011, [2]time.Duration{time.Minute, time.Minute}, [2]time.Duration{time.Minute, time.Minute}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
			app := classicApp(1)
			// The subject is the spacing of retries after WeChat errors: a
			// successful call that outlasts a tight timeout on a loaded
			// machine would be one more failure and one more call.
			cfg := loadTolerant(testConfig(t, app))
			e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
			n := e.start("a", withClock(clock))
			leader(t, 5*time.Second, n)
			first := token(t, n, app.AppID)
			tm := n.b.term.Load()
			it := n.b.apps[testNS][app.AppID].token
			settle(t, n, clock)
			e.sim.Fail(wechat.APIToken, 2, wechattest.Fault{Errcode: tc.code})
			// Past the refresh time, with room for 60 s waits before expiry.
			clock.Set(first.ExpiresAt.Add(-5 * time.Minute))
			for i := range 2 {
				var due time.Time
				waitFor(t, 30*time.Second, fmt.Sprintf("failed attempt %d", i+1), func() bool {
					due = tm.sched.scheduledAt(it)
					return refreshErrors(n, app.AppID) >= float64(i+1) && !due.IsZero()
				})
				if got := refreshErrors(n, app.AppID); got != float64(i+1) {
					t.Fatalf("%v failed attempts; want %d (no retry before the clock moves)", got, i+1)
				}
				wait := due.Sub(clock.Now())
				if wait < tc.lo[i] || wait > tc.hi[i] {
					t.Fatalf("wait after failure %d = %s; want %s..%s", i+1, wait, tc.lo[i], tc.hi[i])
				}
				clock.Advance(wait)
			}
			waitFor(t, 30*time.Second, "the refresh after the faults", func() bool {
				tok, err := n.b.AccessToken(testNS, app.AppID)
				return err == nil && tok.Generation > first.Generation
			})
			if got := e.sim.Calls(wechat.APIToken, app.AppID); got != 4 {
				t.Errorf("token calls = %d; want 4 (first, two failures, success)", got)
			}
		})
	}
}

// TestUnknownOutcomeShortensStoredToken (invariant 3): when a classic fetch may
// have minted a token (the response was lost), the stored token is treated
// as ending after WeChat's overlap, so it is not served once WeChat killed it.
func TestUnknownOutcomeShortensStoredToken(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg) // 300 s overlap
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	first := token(t, n, app.AppID)
	settle(t, n, clock)
	// net/http replays a request whose connection closed before any answer:
	// two dropped responses, both minting, then plain failures.
	e.sim.Fail(wechat.APIToken, 2, wechattest.Fault{DropResponse: true})
	e.sim.Fail(wechat.APIToken, 100, wechattest.Fault{Errcode: -1})
	start := first.ExpiresAt.Add(-25 * time.Minute) // due: less than 25% left
	clock.Set(start)
	waitFor(t, 5*time.Second, "the failed refresh", func() bool { return refreshErrors(n, app.AppID) >= 1 })
	if e.sim.TokensIssued(app.AppID) < 2 {
		t.Fatal("the dropped response minted no token")
	}
	tok, err := n.b.AccessToken(testNS, app.AppID)
	if err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("AccessToken within the overlap = generation %d, %v; want the stored token", tok.Generation, err)
	}
	if limit := start.Add(overlapDefault); tok.ExpiresAt.After(limit) {
		t.Errorf("stored token still expires %s after the unknown outcome; want at most the %s overlap",
			tok.ExpiresAt.Sub(start), overlapDefault)
	}
	clock.Set(start.Add(overlapDefault + time.Second))
	if e.sim.TokenValid(app.AppID, first.AccessToken) {
		t.Fatal("the superseded token is still valid at the simulator after the overlap")
	}
	if got, err := n.b.AccessToken(testNS, app.AppID); !errors.Is(err, ErrNoToken) {
		t.Errorf("AccessToken after the overlap = generation %d (valid at WeChat: %v), %v; want ErrNoToken",
			got.Generation, e.sim.TokenValid(app.AppID, got.AccessToken), err)
	}
}

// TestNamespaceKeys (invariant 6): every per-app Redis key lives under its
// namespace, and a namespace's hashes hold only its own apps.
func TestNamespaceKeys(t *testing.T) {
	prodApp, stagingApp := classicApp(1, "jsapi"), classicApp(2)
	cfg := testConfig(t, prodApp)
	cfg.Namespaces["staging"] = &config.Namespace{Apps: []*config.App{stagingApp}}
	cfg.Refresh.ForceMinInterval = time.Minute // leaves a forcelast marker
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	apps := map[string]*config.App{testNS: prodApp, "staging": stagingApp}
	for ns, a := range apps {
		var cur Token
		waitFor(t, 5*time.Second, "a token in "+ns, func() bool {
			var err error
			cur, err = n.b.AccessToken(ns, a.AppID)
			return err == nil
		})
		if _, err := n.b.Invalidate(context.Background(), ns, a.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
			t.Fatalf("Invalidate in %s: %v", ns, err)
		}
	}
	waitFor(t, 5*time.Second, "the ticket", func() bool {
		_, err := n.b.Ticket(testNS, prodApp.AppID, "jsapi")
		return err == nil
	})

	ctx := context.Background()
	rdb := e.redis.Client(t)
	k := n.b.store.keys
	all, err := rdb.Keys(ctx, k.p+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	global := map[string]bool{k.lock(): true, k.epoch(): true, k.rev(): true}
	kinds := map[string]map[string]bool{testNS: {}, "staging": {}}
	for _, key := range all {
		if global[key] {
			continue
		}
		rest, ok := strings.CutPrefix(key, k.p+":ns:")
		ns, rest, ok2 := strings.Cut(rest, ":")
		a := apps[ns]
		if !ok || !ok2 || a == nil {
			t.Errorf("key %q is not under a namespace", key)
			continue
		}
		kind, _, _ := strings.Cut(rest, ":")
		kinds[ns][kind] = true
		for other, o := range apps {
			if other != ns && strings.Contains(rest, o.AppID) {
				t.Errorf("key %q of namespace %s names %s's app", key, ns, other)
			}
		}
	}
	for ns, a := range apps {
		for _, want := range []string{"tok", "st", "quota", "force", "forcelast"} {
			if !kinds[ns][want] {
				t.Errorf("no %q key under namespace %s (keys: %v)", want, ns, all)
			}
		}
		for _, h := range []string{k.tok(ns), k.status(ns)} {
			fields, err := rdb.HKeys(ctx, h).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fields {
				if !strings.HasPrefix(f, a.AppID+"/") {
					t.Errorf("hash %s holds %q, not an app of namespace %s", h, f, ns)
				}
			}
		}
	}
}

// TestReconcileRepairsMissedEvent (invariant 9): a write whose pub/sub message was
// lost reaches every replica through the periodic reconcile.
func TestReconcileRepairsMissedEvent(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	token(t, a, app.AppID)
	token(t, b, app.AppID)
	r := a.b.apps[testNS][app.AppID].token.cur.Load()
	now := time.Now()
	raw := fmt.Sprintf("%d\t%d\t%s", r.Rev+1000, r.Gen+1, recordTail("missed-event-token", now.Add(time.Hour), now, ""))
	if err := e.redis.Client(t).HSet(context.Background(), a.b.store.keys.tok(testNS), a.b.items[0].field, raw).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the follower to reconcile (every 500ms)", func() bool {
		tok, err := b.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.AccessToken == "missed-event-token"
	})
}

// TestPubSubUpdatesFollowers (invariant 9): a new token reaches a follower through
// pub/sub, long before its next reconcile.
func TestPubSubUpdatesFollowers(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	cur := token(t, a, app.AppID)
	b := e.start("b", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.reconcileEvery = time.Minute }
	})
	token(t, b, app.AppID)
	got, err := a.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the follower to receive the new token (reconcile every minute)", func() bool {
		tok, err := b.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.AccessToken == got.AccessToken
	})
}

// inflightWeChat tracks how many token calls run at once. Each call waits
// (briefly) for limit calls to be in flight, so that a scheduler allowing
// more would show it.
type inflightWeChat struct {
	WeChat
	limit int

	mu       sync.Mutex
	cond     *sync.Cond
	inflight int
	max      int
}

func (w *inflightWeChat) Token(ctx context.Context, appID, secret string) (wechat.Token, error) {
	w.mu.Lock()
	w.inflight++
	w.max = max(w.max, w.inflight)
	w.cond.Broadcast()
	deadline := time.Now().Add(150 * time.Millisecond)
	stop := context.AfterFunc(ctx, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	timer := time.AfterFunc(time.Until(deadline), func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	for w.inflight < w.limit && time.Now().Before(deadline) && ctx.Err() == nil {
		w.cond.Wait()
	}
	w.mu.Unlock()
	stop()
	timer.Stop()
	defer func() {
		w.mu.Lock()
		w.inflight--
		w.mu.Unlock()
	}()
	return w.WeChat.Token(ctx, appID, secret)
}

// TestRefreshConcurrencyBound (invariant 3): no more than refresh.concurrency
// credential calls run at once, however many tokens fall due together.
func TestRefreshConcurrencyBound(t *testing.T) {
	var apps []*config.App
	for i := range 6 {
		apps = append(apps, classicApp(i+1))
	}
	cfg := testConfig(t, apps...)
	cfg.Refresh.Concurrency = 2
	e := newEnv(t, wechattest.Options{}, cfg)
	w := &inflightWeChat{limit: cfg.Refresh.Concurrency}
	w.cond = sync.NewCond(&w.mu)
	n := e.start("a", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) {
			w.WeChat = b.wx
			b.wx = w
		}
	})
	leader(t, 5*time.Second, n)
	for _, a := range apps {
		token(t, n, a.AppID)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.max != cfg.Refresh.Concurrency {
		t.Errorf("at most %d token calls ran at once; want refresh.concurrency = %d", w.max, cfg.Refresh.Concurrency)
	}
}
