package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// reader reads every app's token on the given nodes until stopped and
// records the first problem: an error, an expired token, or one the
// simulator rejects.
type reader struct {
	wg      sync.WaitGroup
	stopc   chan struct{}
	reads   atomic.Int64
	mu      sync.Mutex
	problem string
}

func startReader(t *testing.T, e *env, nodes []*node, appids []string, checkValid bool) *reader {
	r := &reader{stopc: make(chan struct{})}
	for _, n := range nodes {
		r.wg.Go(func() {
			for {
				select {
				case <-r.stopc:
					return
				default:
				}
				for _, id := range appids {
					tok, err := n.b.AccessToken(testNS, id)
					now := time.Now()
					switch {
					case err != nil:
						r.fail("AccessToken(%s) on %s: %v", id, n.b.id, err)
					case !now.Before(tok.ExpiresAt):
						r.fail("expired token served by %s", n.b.id)
					case checkValid && !e.sim.TokenValid(id, tok.AccessToken):
						r.fail("token of %s served by %s is not valid at the simulator (generation %d)", id, n.b.id, tok.Generation)
					}
					r.reads.Add(1)
				}
				time.Sleep(time.Millisecond) // pace the reads; they run until stopped
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *reader) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.problem == "" {
		r.problem = fmt.Sprintf(format, args...)
	}
}

func (r *reader) stop() {
	select {
	case <-r.stopc:
	default:
		close(r.stopc)
	}
	r.wg.Wait()
}

func (r *reader) check(t *testing.T) {
	t.Helper()
	r.stop()
	if r.problem != "" {
		t.Errorf("reader: %s", r.problem)
	}
	if r.reads.Load() == 0 {
		t.Error("reader made no reads")
	}
}

// TestThreeBrokersOneFetchPerLifetime is the headline: three replicas, one
// Redis, one simulated WeChat, exactly one credential fetch per lifetime, all
// from the leader.
func TestThreeBrokersOneFetchPerLifetime(t *testing.T) {
	// Lifetimes are short but leave room for the one second of life below
	// which nothing is served, and for the stable rotation window.
	const ttl, window = 5 * time.Second, 2 * time.Second
	classic, stable := classicApp(1, "jsapi"), stableApp(2)
	cfg := testConfig(t, classic, stable)
	cfg.Refresh.StableRotationWindow = window
	// The ticket lives twice as long as its token, so it never falls due on
	// its own: every ticket call is the one a new token kicks. With equal
	// lifetimes this short, the ticket's last safe moment (its expiry less
	// one second of minimum life and the WeChat timeout) comes a few
	// milliseconds after its token's, and a token call still in flight then
	// rightly makes the ticket refresh with the old token, a second ticket
	// call for that token (TestTicketWaitsForItsTokenInFlight covers that
	// rule at realistic lifetimes).
	e := newEnv(t, wechattest.Options{TokenTTL: ttl, TicketTTL: 2 * ttl, Overlap: time.Second, RotationWindow: window}, cfg)
	nodes := []*node{e.start("a"), e.start("b"), e.start("c")}
	l := leader(t, 5*time.Second, nodes...)
	for _, n := range nodes {
		token(t, n, classic.AppID)
		token(t, n, stable.AppID)
	}
	r := startReader(t, e, nodes, []string{classic.AppID, stable.AppID}, true)
	began := time.Now()
	// Run through a little more than two lifetimes.
	waitFor(t, 4*ttl, "two refreshes of each token", func() bool {
		c, _ := l.b.AccessToken(testNS, classic.AppID)
		s, _ := l.b.AccessToken(testNS, stable.AppID)
		return c.Generation >= 3 && s.Generation >= 3
	})
	r.check(t)

	for _, n := range nodes {
		if n != l && n.wx.total() != 0 {
			t.Errorf("standby %s made %d credential calls; only the leader may", n.b.id, n.wx.total())
		}
	}
	if !l.b.IsLeader() {
		t.Fatalf("leadership moved during the test")
	}
	// One call per generation, seen from every replica. A standby learns of
	// the leader's last write through pub/sub a moment later (much later on a
	// loaded machine), and the leader may refresh again meanwhile: wait until
	// every replica agrees with the simulator's count rather than reading a
	// standby's cache right after the leader wrote.
	var mismatch string
	agree := func() bool {
		mismatch = ""
		for _, n := range nodes {
			c, _ := n.b.AccessToken(testNS, classic.AppID)
			s, _ := n.b.AccessToken(testNS, stable.AppID)
			if got, want := e.sim.Calls(wechat.APIToken, classic.AppID), int(c.Generation); got != want {
				mismatch = fmt.Sprintf("%s: classic token calls = %d; want %d, one per generation", n.b.id, got, want)
				return false
			}
			if got, want := e.sim.Calls(wechat.APIStableToken, stable.AppID), int(s.Generation); got != want {
				mismatch = fmt.Sprintf("%s: stable token calls = %d; want %d, one per generation", n.b.id, got, want)
				return false
			}
		}
		// The ticket follows its token (the stored token kicks its fetch),
		// and the quota gauge is set just before each call.
		c, _ := l.b.AccessToken(testNS, classic.AppID)
		if got := e.sim.Calls(wechat.APIGetTicket, classic.AppID); got != int(c.Generation) {
			mismatch = fmt.Sprintf("getticket calls = %d; want %d, one per access token", got, c.Generation)
			return false
		}
		if got := testutil.ToFloat64(l.m.WeChatQuotaUsed.WithLabelValues(testNS, classic.AppID, wechat.APIToken)); int(got) != e.sim.Calls(wechat.APIToken, classic.AppID) {
			mismatch = fmt.Sprintf("quota gauge = %v; want %d", got, e.sim.Calls(wechat.APIToken, classic.AppID))
			return false
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !agree() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if mismatch != "" {
		t.Error(mismatch)
	}
	elapsed := time.Since(began)
	c, _ := l.b.AccessToken(testNS, classic.AppID)
	tk, err := nodes[1].b.Ticket(testNS, classic.AppID, "jsapi")
	if err != nil || !time.Now().Before(tk.ExpiresAt) {
		t.Errorf("Ticket on a standby = %+v, %v; want a valid ticket", tk, err)
	}
	if calls := e.sim.Calls(wechat.APIToken, classic.AppID); float64(calls) > elapsed.Seconds()/(ttl.Seconds()*0.6)+1.5 {
		t.Errorf("%d classic fetches in %s with a %s lifetime: more than one per lifetime", calls, elapsed, ttl)
	}
	standby := nodes[0]
	if standby == l {
		standby = nodes[1]
	}
	st := standby.b.Status(context.Background())
	if st.Role != RoleStandby || st.LeaderID != l.b.id || len(st.Apps) != 2 {
		t.Fatalf("standby Status = role %q leader %q apps %d; want standby, %q, 2", st.Role, st.LeaderID, len(st.Apps), l.b.id)
	}
	// The day's counter grows just before each call reaches the simulator:
	// compare outside a refresh in flight.
	waitFor(t, 10*time.Second, "Status fetches_today[token] to match the simulator's count", func() bool {
		st = standby.b.Status(context.Background())
		return len(st.Apps) == 2 && st.Apps[0].FetchesToday[wechat.APIToken] == int64(e.sim.Calls(wechat.APIToken, classic.AppID))
	})
	for _, n := range nodes {
		noSecrets(t, n, secretOf(classic.AppID), secretOf(stable.AppID), c.AccessToken)
	}
}

// TestLeaderLossTakeover cancels the leader's Run: another replica leads
// within lock_ttl + 1s and readers never see an error or an invalid token.
func TestLeaderLossTakeover(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{TokenTTL: 5 * time.Second, Overlap: time.Second}, cfg)
	nodes := []*node{e.start("a"), e.start("b"), e.start("c")}
	l := leader(t, 5*time.Second, nodes...)
	var rest []*node
	for _, n := range nodes {
		token(t, n, app.AppID)
		if n != l {
			rest = append(rest, n)
		}
	}
	r := startReader(t, e, rest, []string{app.AppID}, true)
	before, _ := rest[0].b.AccessToken(testNS, app.AppID)
	stopped := time.Now()
	l.stop()
	nl := leader(t, cfg.Leader.LockTTL+time.Second, rest...)
	t.Logf("takeover after %s", time.Since(stopped))
	// The new leader refreshes on schedule.
	waitFor(t, 5*time.Second, "a refresh by the new leader", func() bool {
		tok, _ := nl.b.AccessToken(testNS, app.AppID)
		return tok.Generation > before.Generation
	})
	r.check(t)
	if nl.wx.total() == 0 {
		t.Error("the new leader made no credential call")
	}
	if got := testutil.ToFloat64(nl.m.Leader); got != 1 {
		t.Errorf("wxbroker_leader on the new leader = %v; want 1", got)
	}
	if got := testutil.ToFloat64(l.m.Leader); got != 0 {
		t.Errorf("wxbroker_leader on the stopped leader = %v; want 0", got)
	}
}

// TestReadyAndErrors covers Ready before any token and the read errors.
func TestReadyAndErrors(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	b := idleBroker(t, cfg, e.redis.Client(t))
	if err := b.Ready(); err == nil {
		t.Error("Ready() = nil before any token; want an error")
	}
	n := e.start("a")
	token(t, n, app.AppID)
	if err := n.b.Ready(); err != nil {
		t.Errorf("Ready() = %v with a valid token", err)
	}
	if _, err := n.b.Invalidate(context.Background(), "nope", app.AppID, "x", "client"); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("Invalidate(unknown namespace) = %v; want ErrUnknownApp", err)
	}
	tok, _ := n.b.AccessToken(testNS, app.AppID)
	if ns, id, ok := n.b.AppByToken(tok.AccessToken); !ok || ns != testNS || id != app.AppID {
		t.Errorf("AppByToken(current) = %q, %q, %v; want %q, %q, true", ns, id, ok, testNS, app.AppID)
	}
	if _, _, ok := n.b.AppByToken("not-a-token"); ok {
		t.Error("AppByToken(unknown) = ok")
	}
}
