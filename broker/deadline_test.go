package broker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestNothingServedUnderOneSecond (invariant 3): a token or ticket with less than
// one second of life is not served (an answer "expires_in": 0 is of no use),
// while one with a second left still is.
func TestNothingServedUnderOneSecond(t *testing.T) {
	n, clock, app, tok, tk := failingRefreshes(t)

	clock.Set(tok.ExpiresAt.Add(-minServeLife))
	if got, err := n.b.AccessToken(testNS, app.AppID); err != nil || got.AccessToken != tok.AccessToken {
		t.Errorf("AccessToken with 1s left = generation %d, %v; want the cached token", got.Generation, err)
	}
	clock.Set(tok.ExpiresAt.Add(-minServeLife + time.Millisecond))
	if got, err := n.b.AccessToken(testNS, app.AppID); !errors.Is(err, ErrNoToken) {
		t.Errorf("AccessToken with 999ms left = expires_in %s, %v; want ErrNoToken", got.ExpiresAt.Sub(clock.Now()), err)
	}
	if err := n.b.Ready(); err == nil {
		t.Error("Ready() = nil with only a token that is no longer served")
	}
	clock.Set(tk.ExpiresAt.Add(-minServeLife + time.Millisecond))
	if got, err := n.b.Ticket(testNS, app.AppID, "jsapi"); !errors.Is(err, ErrNoToken) {
		t.Errorf("Ticket with 999ms left = expires_in %s, %v; want ErrNoToken", got.ExpiresAt.Sub(clock.Now()), err)
	}
}

// TestRetriesFitRemainingLife (invariant 3): as the cached token nears its expiry,
// the retry spacing shrinks so that several attempts fit in the life it has
// left (never below wechat.timeout), and the 60 s after 45011 gives way to
// one last attempt while the token is still served.
func TestRetriesFitRemainingLife(t *testing.T) {
	const left = 20 * time.Second
	tests := []struct {
		name   string
		code   int
		checks func(wait, remaining, timeout time.Duration) error
	}{
		{"errcode -1", -1, func(wait, remaining, timeout time.Duration) error {
			if wait < timeout || wait > remaining/retryAttempts {
				return fmt.Errorf("wait %s with %s left; want %s..%s", wait, remaining, timeout, remaining/retryAttempts)
			}
			return nil
		}},
		{"45011 minute quota", 45011, func(wait, remaining, timeout time.Duration) error {
			if latest := remaining - timeout - minServeLife; wait < latest-time.Second || wait > latest {
				return fmt.Errorf("wait %s with %s left; want the last moment a retry still helps, %s", wait, remaining, latest)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := clocktest.New(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
			app := classicApp(1)
			cfg := testConfig(t, app)
			e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
			n := e.start("a", func(n *node, _ *redis.Options) {
				n.setup = func(b *Broker) {
					b.now = clock.Now
					// Far longer than the life left: without the deadline,
					// the token would die between two attempts.
					b.backoffMin, b.backoffMax = time.Minute, 10*time.Minute
				}
			})
			leader(t, 5*time.Second, n)
			first := token(t, n, app.AppID)
			tm := n.b.el.term.Load()
			it := n.b.catalog().apps[testNS][app.AppID].token
			settle(t, n, clock)
			e.sim.Fail(wechat.APIToken, 2, wechattest.Fault{Errcode: tc.code})
			clock.Set(first.ExpiresAt.Add(-left))
			attempts := 2
			if tc.code == 45011 {
				attempts = 1
			}
			for i := range attempts {
				var due time.Time
				waitFor(t, 5*time.Second, fmt.Sprintf("failed attempt %d", i+1), func() bool {
					due = tm.sched().scheduledAt(it)
					return refreshErrors(n, app.AppID) >= float64(i+1) && !due.IsZero()
				})
				remaining := first.ExpiresAt.Sub(clock.Now())
				wait := due.Sub(clock.Now())
				if err := tc.checks(wait, remaining, cfg.WeChat.Timeout); err != nil {
					t.Fatalf("after failure %d: %v", i+1, err)
				}
				clock.Advance(wait)
			}
		})
	}
}

// TestRefreshDueBeforeServingStops (invariant 3): with a lifetime so short that
// before_expiry would leave less than a call and the second below which
// nothing is served, the refresh is due earlier.
func TestRefreshDueBeforeServingStops(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never used: no Redis call here
	t.Cleanup(func() { _ = rdb.Close() })
	b := idleBroker(t, cfg, rdb)
	it := b.catalog().items[0]
	now := time.Now()
	it.cur.Store(&record{Rev: 1, Gen: 1, Value: "tok", FetchedAt: now, ExpiresAt: now.Add(3 * time.Second)})
	s := newScheduler(b.lead, &term{})
	due := s.dueFor(s.tasks[it], now)
	if latest := now.Add(3*time.Second - minServeLife - cfg.WeChat.Timeout); due.After(latest) {
		t.Errorf("refresh of a 3 s token due %s before expiry; want at least %s", now.Add(3*time.Second).Sub(due), minServeLife+cfg.WeChat.Timeout)
	}
}
