package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestInjectedClockLifetimes runs WeChat's real lifetimes (7200 s tokens, a
// 300 s overlap and rotation window) and the default refresh settings on an
// injected clock: one fetch per lifetime for classic and stable tokens, and
// the served token is always valid.
func TestInjectedClockLifetimes(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	classic, stable := classicApp(1), stableApp(2)
	cfg := testConfig(t, classic, stable)
	cfg.Refresh.BeforeExpiry = config.Portion{Fraction: 0.25}
	cfg.Refresh.Jitter = config.Portion{Fraction: 0.10}
	cfg.Refresh.StableRotationWindow = 5 * time.Minute
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.now = clock.Now }
	})
	leader(t, 5*time.Second, n)
	ids := []string{classic.AppID, stable.AppID}
	for _, id := range ids {
		token(t, n, id)
	}
	settled := func() bool {
		t := n.b.el.term.Load()
		if t == nil {
			return false
		}
		for _, it := range n.b.catalog().items {
			if due := t.sched().scheduledAt(it); due.IsZero() || !due.After(clock.Now()) {
				return false
			}
		}
		return true
	}
	const lifetimes = 5
	for step := 0; step < lifetimes*7200/60; step++ {
		clock.Advance(time.Minute)
		waitFor(t, 5*time.Second, "the scheduler to settle", settled)
		for _, id := range ids {
			tok, err := n.b.AccessToken(testNS, id)
			if err != nil || !e.sim.TokenValid(id, tok.AccessToken) {
				t.Fatalf("step %d: AccessToken(%s) = generation %d, %v; valid at the simulator: %v", step, id, tok.Generation, err,
					err == nil && e.sim.TokenValid(id, tok.AccessToken))
			}
		}
	}
	c, _ := n.b.AccessToken(testNS, classic.AppID)
	s, _ := n.b.AccessToken(testNS, stable.AppID)
	t.Logf("over %d lifetimes: %d classic fetches, %d stable fetches", lifetimes, c.Generation, s.Generation)
	if got := e.sim.Calls(wechat.APIToken, classic.AppID); got != int(c.Generation) || got < lifetimes || got > lifetimes*7200/5000+2 {
		t.Errorf("classic calls over %d lifetimes = %d (generation %d); want one per refresh at 65-75%% of the lifetime", lifetimes, got, c.Generation)
	}
	if got := e.sim.Calls(wechat.APIStableToken, stable.AppID); got != int(s.Generation) || got > lifetimes+1 {
		t.Errorf("stable calls over %d lifetimes = %d (generation %d); want one per lifetime", lifetimes, got, s.Generation)
	}
}

func TestDayAndBackoff(t *testing.T) {
	tests := []struct {
		in      time.Time
		day     string
		nextDay time.Time
	}{
		{time.Date(2026, 3, 1, 15, 59, 0, 0, time.UTC), "20260301", time.Date(2026, 3, 1, 16, 0, 0, 0, time.UTC)},
		{time.Date(2026, 3, 1, 16, 0, 0, 0, time.UTC), "20260302", time.Date(2026, 3, 2, 16, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		if got := day(tc.in); got != tc.day {
			t.Errorf("day(%v) = %q; want %q", tc.in, got, tc.day)
		}
		if got := nextDay(tc.in); !got.Equal(tc.nextDay) {
			t.Errorf("nextDay(%v) = %v; want %v", tc.in, got, tc.nextDay)
		}
	}
	b := &scheduler{b: &refresher{core: &core{backoffMin: time.Second, backoffMax: time.Minute}}}
	for n, want := range map[int]time.Duration{1: time.Second, 3: 4 * time.Second, 20: time.Minute} {
		if got := b.backoff(n, 0); got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(%d) = %s; want %s ±20%%", n, got, want)
		}
	}
	if got := b.backoff(1, time.Minute); got < time.Minute {
		t.Errorf("backoff after 45011 = %s; want at least 60s", got)
	}
}

// TestTicketWaitsForItsTokenInFlight: a ticket that falls due while its
// access token's refresh is in flight waits for the new token (whose store
// kicks it) instead of fetching once more with the old one, so there is one
// getticket per access token. Without jitter, both fall due at once.
func TestTicketWaitsForItsTokenInFlight(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	app := classicApp(1, "jsapi")
	cfg := testConfig(t, app)
	cfg.Refresh.BeforeExpiry = config.Portion{Fraction: 0.25}
	cfg.Refresh.Jitter = config.Portion{}
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.now = clock.Now }
	})
	leader(t, 5*time.Second, n)
	token(t, n, app.AppID)
	tm := n.b.el.term.Load()
	ticket := n.b.catalog().apps[testNS][app.AppID].tickets["jsapi"]
	queued := func() bool { // the ticket waits for a later time
		due := tm.sched().scheduledAt(ticket)
		return !due.IsZero() && due.After(clock.Now())
	}
	var first Ticket
	waitFor(t, 5*time.Second, "the first ticket, scheduled", func() bool {
		var err error
		first, err = n.b.Ticket(testNS, app.AppID, "jsapi")
		return err == nil && queued()
	})

	// Hold the next token call until the ticket's task has run and been
	// queued again (bounded well below the 400 ms WeChat timeout).
	inFlight := make(chan struct{})
	var once sync.Once
	n.wx.mu.Lock()
	n.wx.before = func(api string) {
		if api != wechat.APIToken {
			return
		}
		once.Do(func() { close(inFlight) })
		for deadline := time.Now().Add(250 * time.Millisecond); !queued() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	n.wx.mu.Unlock()
	clock.Advance(6000 * time.Second) // past the refresh time of both (25% of 7200 s left)
	select {
	case <-inFlight:
	case <-time.After(5 * time.Second):
		t.Fatal("no token refresh after the clock passed its due time")
	}
	waitFor(t, 5*time.Second, "a new ticket", func() bool {
		tk, err := n.b.Ticket(testNS, app.AppID, "jsapi")
		return err == nil && tk.Ticket != first.Ticket
	})
	if got := e.sim.Calls(wechat.APIGetTicket, app.AppID); got != 2 {
		t.Errorf("getticket calls = %d; want 2, one per access token", got)
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
	tm := n.b.el.term.Load()
	now := clock.Now()
	dues := map[time.Time]bool{}
	for _, a := range apps {
		tok := token(t, n, a.AppID)
		if tok.ExpiresAt.Sub(now) != 7200*time.Second {
			t.Fatalf("token of %s expires at %v; want 7200 s after the frozen clock", a.AppID, tok.ExpiresAt)
		}
		it := n.b.catalog().apps[testNS][a.AppID].token
		var due time.Time
		waitFor(t, 5*time.Second, "the next refresh of "+a.AppID+" scheduled", func() bool {
			due = tm.sched().scheduledAt(it)
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
			tm := n.b.el.term.Load()
			it := n.b.catalog().apps[testNS][app.AppID].token
			settle(t, n, clock)
			e.sim.Fail(wechat.APIToken, 2, wechattest.Fault{Errcode: tc.code})
			// Past the refresh time, with room for 60 s waits before expiry.
			clock.Set(first.ExpiresAt.Add(-5 * time.Minute))
			for i := range 2 {
				var due time.Time
				waitFor(t, 30*time.Second, fmt.Sprintf("failed attempt %d", i+1), func() bool {
					due = tm.sched().scheduledAt(it)
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

// TestRetryWaitKeepsTheServeFloor (issue 14, item 9): after consecutive
// failures with a valid credential cached, every retry starts early enough
// that its answer, within wechat.timeout, lands before the credential's
// last second (when reads stop serving it): a retry after room =
// expiry − minServeLife − wechat.timeout would leave reads answering 503.
// The clock is the now argument: no real time passes.
func TestRetryWaitKeepsTheServeFloor(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, timeout := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 2 * time.Second, 5 * time.Second} {
		cfg := &config.Config{WeChat: config.WeChat{Timeout: timeout}}
		b := &scheduler{b: &refresher{core: &core{cfg: cfg, backoffMin: time.Second, backoffMax: time.Minute}}}
		it := &item{}
		for left := 100 * time.Millisecond; left <= 2*time.Minute; left += 10 * time.Millisecond {
			it.cur.Store(&record{ExpiresAt: now.Add(left)})
			room := left - minServeLife - timeout
			for n := 1; n <= 8; n++ {
				for _, least := range []time.Duration{0, time.Minute} {
					got := b.retryWait(it, n, least, now)
					if got <= 0 {
						t.Fatalf("timeout %s, %s left, failure %d, least %s: retryWait = %s; want a positive wait", timeout, left, n, least, got)
					}
					if room > 0 && got > room {
						t.Fatalf("timeout %s, %s left, failure %d, least %s: retryWait = %s; want at most %s, so that the attempt lands before the last second",
							timeout, left, n, least, got, room)
					}
				}
			}
		}
	}
	// The reported case: a stable token in its rotation window, two failed
	// calls (-1, then HTTP 502), wechat.timeout 2 s: the third attempt came
	// 2 s after the second with 2.59 s of life left and landed past the floor.
	b := &scheduler{b: &refresher{core: &core{cfg: &config.Config{WeChat: config.WeChat{Timeout: 2 * time.Second}}, backoffMin: time.Second, backoffMax: time.Minute}}}
	it := &item{}
	it.cur.Store(&record{ExpiresAt: now.Add(4590 * time.Millisecond)})
	if got, want := b.retryWait(it, 2, 0, now), 1590*time.Millisecond; got > want {
		t.Errorf("retryWait with 4.59 s left after 2 failures = %s; want at most %s", got, want)
	}
}

// TestRetriesLandBeforeTheServeFloor (issue 14, item 9) on the injected
// clock: two failed calls in a row (-1, then HTTP 502) near expiry; the
// third attempt is due by expiry − 1 s − wechat.timeout, so that it lands
// while the cached token is still served, and it replaces the token.
func TestRetriesLandBeforeTheServeFloor(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	app := classicApp(1)
	cfg := loadTolerant(testConfig(t, app))
	timeout := cfg.WeChat.Timeout
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", func(n *node, _ *redis.Options) {
		n.setup = func(b *Broker) { b.now, b.backoffMin, b.backoffMax = clock.Now, time.Second, time.Minute }
	})
	leader(t, 5*time.Second, n)
	first := token(t, n, app.AppID)
	tm := n.b.el.term.Load()
	it := n.b.catalog().apps[testNS][app.AppID].token
	settle(t, n, clock)
	e.sim.Fail(wechat.APIToken, 1, wechattest.Fault{Errcode: -1})
	e.sim.Fail(wechat.APIToken, 1, wechattest.Fault{Status: 502})
	floor := first.ExpiresAt.Add(-minServeLife)
	lastStart := floor.Add(-timeout)
	// Room for the first retry at the plain backoff, not for the second.
	clock.Set(lastStart.Add(-1500 * time.Millisecond))
	for i := range 2 {
		var due time.Time
		waitFor(t, 30*time.Second, fmt.Sprintf("failed attempt %d", i+1), func() bool {
			due = tm.sched().scheduledAt(it)
			return refreshErrors(n, app.AppID) >= float64(i+1) && !due.IsZero() && due.After(clock.Now())
		})
		if due.After(lastStart) {
			t.Fatalf("after failure %d with %s of life left the next attempt is due %s before expiry; want at least %s (1 s floor + wechat.timeout)",
				i+1, first.ExpiresAt.Sub(clock.Now()), first.ExpiresAt.Sub(due), first.ExpiresAt.Sub(lastStart))
		}
		if tok, err := n.b.AccessToken(testNS, app.AppID); err != nil || tok.AccessToken != first.AccessToken {
			t.Fatalf("read after failure %d: %v; want the cached token", i+1, err)
		}
		clock.Set(due)
	}
	waitFor(t, 30*time.Second, "the refresh after the faults", func() bool {
		tok, err := n.b.AccessToken(testNS, app.AppID)
		return err == nil && tok.Generation > first.Generation
	})
	if !clock.Now().Before(floor) {
		t.Errorf("the token was replaced at %s, past the serve floor %s", clock.Now(), floor)
	}
}
