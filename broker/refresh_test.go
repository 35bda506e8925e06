package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestRefreshSurvivesFaults: while WeChat misbehaves the cached token keeps
// being served (never an expired one), and the refresh succeeds once the
// faults clear.
func TestRefreshSurvivesFaults(t *testing.T) {
	rs := redistest.Start(t)
	tests := []struct {
		name    string
		fault   wechattest.Fault
		n       int
		unknown bool // the fetch may have minted a token: the old one dies at the retry
	}{
		{"html 502", wechattest.Fault{Status: 502}, 2, false},
		{"invalid json", wechattest.Fault{InvalidJSON: true}, 2, false},
		{"errcode -1", wechattest.Fault{Errcode: -1}, 2, false},
		// The simulator holds the answer until the client gives up: the
		// latency is far beyond any timeout, however slow the machine.
		{"latency beyond timeout", wechattest.Fault{Latency: time.Hour}, 2, false},
		{"dropped connection", wechattest.Fault{Drop: true}, 2, false},
		// net/http replays a GET whose reused connection closed before any
		// answer, so two dropped responses are needed for the broker to see one.
		{"dropped response", wechattest.Fault{DropResponse: true}, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app := classicApp(1)
			// A WeChat timeout no successful call reaches on a loaded
			// machine (else it counts as one more faulted call). A timed-out
			// call may have minted a token, so the broker assumes the cached
			// one ends WeChat's overlap after the call started: the overlap
			// holds two timed-out attempts and the success with room to
			// spare, and the lifetime holds the refresh (due about 6 s after
			// the first fetch) plus the overlap.
			cfg := loadTolerant(testConfig(t, app))
			cfg.Refresh.BeforeExpiry = config.Portion{Fraction: 0.9}
			cfg.Refresh.Jitter = config.Portion{Fraction: 0.01}
			e := newEnvWith(t, rs, wechattest.Options{TokenTTL: time.Minute, Overlap: 4 * tolerantWeChatTimeout}, cfg)
			n := e.start("a")
			first := token(t, n, app.AppID)
			e.sim.Fail(wechat.APIToken, tc.n, tc.fault)
			r := startReader(t, e, []*node{n}, []string{app.AppID}, !tc.unknown)
			waitFor(t, 60*time.Second, "a refresh after the faults", func() bool {
				tok, err := n.b.AccessToken(testNS, app.AppID)
				return err == nil && tok.Generation > first.Generation
			})
			r.check(t)
			tok, _ := n.b.AccessToken(testNS, app.AppID)
			if !e.sim.TokenValid(app.AppID, tok.AccessToken) {
				t.Error("the refreshed token is not valid at the simulator")
			}
			if got, want := e.sim.Calls(wechat.APIToken, app.AppID), 1+tc.n+1; got != want {
				t.Errorf("token calls = %d; want %d (first, %d faulted, one success)", got, want, tc.n)
			}
			// A dropped connection may be replayed once by net/http.
			if got := testutil.ToFloat64(n.m.TokenRefresh.WithLabelValues(testNS, app.AppID, KindAccessToken, metrics.ResultError)); got < 1 || got > float64(tc.n) {
				t.Errorf("refresh errors counted = %v; want 1..%d", got, tc.n)
			}
			if tc.unknown && !logged(n.logs, zapcore.WarnLevel, "outcome unknown", app.AppID) {
				t.Error("no warning about the unknown outcome")
			}
		})
	}
}

// TestNonRetryableErrorsStopRetries: 45009 and 40125 stop the retries for
// that app and show in Status, metrics and an error log with hint and rid.
func TestNonRetryableErrorsStopRetries(t *testing.T) {
	quota, badSecret := stableApp(1), classicApp(2)
	badSecret.Secret = "wrong-secret"
	cfg := testConfig(t, quota, badSecret)
	e := newEnv(t, wechattest.Options{}, cfg)
	e.sim.Fail(wechat.APIStableToken, 1, wechattest.Fault{Errcode: 45009})
	n := e.start("a")
	leader(t, 5*time.Second, n)

	tests := []struct {
		app  *config.App
		api  string
		code int
	}{
		{quota, wechat.APIStableToken, 45009},
		{badSecret, wechat.APIToken, 40125},
	}
	for _, tc := range tests {
		var cs CredentialStatus
		waitFor(t, 5*time.Second, "the error in Status", func() bool {
			for _, a := range n.b.Status(context.Background()).Apps {
				if a.AppID == tc.app.AppID {
					cs = a.AccessToken
				}
			}
			return cs.LastError != nil && cs.RetriesStopped
		})
		if cs.LastError.Errcode != tc.code || cs.LastError.Hint == nil || cs.LastError.Hint.FixEN == "" || cs.LastError.RID == "" {
			t.Errorf("%d: Status last_error = %+v; want errcode, hint and rid", tc.code, cs.LastError)
		}
		if got := testutil.ToFloat64(n.m.WeChatErrors.WithLabelValues(testNS, tc.app.AppID, tc.api, metrics.ErrcodeLabel(tc.code))); got != 1 {
			t.Errorf("%d: wxbroker_wechat_errors_total = %v; want 1", tc.code, got)
		}
		found := false
		for _, le := range n.logs.FilterMessageSnippet("retries stopped").All() {
			m := le.ContextMap()
			if le.Level == zapcore.ErrorLevel && m["appid"] == tc.app.AppID && m["namespace"] == testNS && m["rid"] != "" && m["fix"] != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%d: no error log with namespace, appid, rid and fix", tc.code)
		}
	}
	// Retries stopped: no further calls (a bounded look, as retries would
	// come after at most backoffMax).
	calls := e.sim.Calls(wechat.APIStableToken, quota.AppID) + e.sim.Calls(wechat.APIToken, badSecret.AppID)
	time.Sleep(3 * n.b.backoffMax)
	if got := e.sim.Calls(wechat.APIStableToken, quota.AppID) + e.sim.Calls(wechat.APIToken, badSecret.AppID); got != calls {
		t.Errorf("credential calls went from %d to %d after retries stopped", calls, got)
	}
	if err := n.b.Ready(); err == nil {
		t.Error("Ready() = nil with no valid token at all")
	}
	st, err := Inspect(context.Background(), e.redis.Client(t), cfg)
	if err != nil || st.Apps[0].AccessToken.LastError == nil || st.Apps[0].AccessToken.LastError.Errcode != 45009 {
		t.Errorf("Inspect = %+v, %v; want the 45009 error", st, err)
	}
	noSecrets(t, n, secretOf(quota.AppID), "wrong-secret")
}

// TestExpiredNeverServed (invariant 3): while refreshes fail the cached token and
// ticket are served until they expire, and never after.
func TestExpiredNeverServed(t *testing.T) {
	n, clock, app, tok, tk := failingRefreshes(t)

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
			w.WeChat = b.lead.wx
			b.lead.wx = w
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

// failingRefreshes starts a leader on a hand-moved clock with a classic app
// and its jsapi ticket, waits for both, then makes every further token and
// ticket call fail with errcode -1.
func failingRefreshes(t *testing.T) (*node, *clocktest.Clock, *config.App, Token, Ticket) {
	t.Helper()
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
	return n, clock, app, tok, tk
}
