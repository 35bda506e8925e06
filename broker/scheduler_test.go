package broker

import (
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
		t := n.b.term.Load()
		if t == nil {
			return false
		}
		for _, it := range n.b.items {
			if due := t.sched.scheduledAt(it); due.IsZero() || !due.After(clock.Now()) {
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
	b := &Broker{backoffMin: time.Second, backoffMax: time.Minute}
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
	tm := n.b.term.Load()
	ticket := n.b.apps[testNS][app.AppID].tickets["jsapi"]
	queued := func() bool { // the ticket waits for a later time
		due := tm.sched.scheduledAt(ticket)
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
