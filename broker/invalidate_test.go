package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// invalidateAll reports failed from n goroutines spread over nodes and
// returns the tokens they got back.
func invalidateAll(t testing.TB, nodes []*node, appid, failed string, n int) ([]Token, []error) {
	t.Helper()
	return reportAll(nodes, n, func(ctx context.Context, b *Broker) (Token, error) {
		return b.Invalidate(ctx, testNS, appid, failed, metrics.SourceClient)
	})
}

// reportAll runs report from n goroutines spread over nodes, all released
// at once, and returns what each got back.
func reportAll(nodes []*node, n int, report func(context.Context, *Broker) (Token, error)) ([]Token, []error) {
	toks := make([]Token, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			// Generous: hundreds of goroutines wait for one refresh on a loaded machine.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			toks[i], errs[i] = report(ctx, nodes[i%len(nodes)].b)
		})
	}
	close(start)
	wg.Wait()
	return toks, errs
}

func TestConcurrentInvalidationsOneCall(t *testing.T) {
	classic := classicApp(1)
	// The subject is the number of calls, not a timeout: a call that
	// outlasts a tight timeout on a loaded machine would be a second call.
	cfg := loadTolerant(testConfig(t, classic))
	e := newEnv(t, wechattest.Options{Overlap: time.Second}, cfg)
	nodes := []*node{e.start("a"), e.start("b"), e.start("c")}
	leader(t, 5*time.Second, nodes...)
	var cur Token
	for _, n := range nodes {
		cur = token(t, n, classic.AppID)
	}
	calls := e.sim.Calls(wechat.APIToken, classic.AppID)

	toks, errs := invalidateAll(t, nodes, classic.AppID, cur.AccessToken, 200)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Invalidate #%d on %s: %v", i, nodes[i%3].b.id, err)
		}
		if toks[i].AccessToken == cur.AccessToken || toks[i].AccessToken != toks[0].AccessToken {
			t.Fatalf("Invalidate #%d returned generation %d; want one new token for all", i, toks[i].Generation)
		}
	}
	if got := e.sim.Calls(wechat.APIToken, classic.AppID) - calls; got != 1 {
		t.Errorf("200 concurrent invalidations caused %d token calls; want 1", got)
	}
	if !e.sim.TokenValid(classic.AppID, toks[0].AccessToken) {
		t.Error("the new token is not valid at the simulator")
	}

	// A stale report (the token already replaced) costs nothing.
	calls = e.sim.Calls(wechat.APIToken, classic.AppID)
	_, errs = invalidateAll(t, nodes, classic.AppID, cur.AccessToken, 30)
	for _, err := range errs {
		if err != nil {
			t.Fatalf("stale Invalidate: %v", err)
		}
	}
	if got := e.sim.Calls(wechat.APIToken, classic.AppID) - calls; got != 0 {
		t.Errorf("stale invalidations caused %d token calls; want 0", got)
	}
	var reported float64
	for _, n := range nodes {
		reported += testutil.ToFloat64(n.m.InvalidCredential.WithLabelValues(testNS, classic.AppID, metrics.SourceClient))
	}
	if reported != 230 {
		t.Errorf("wxbroker_invalid_credential_total{source=client} = %v over the replicas; want 230", reported)
	}
}

func TestForceBudgetStable(t *testing.T) {
	tests := []struct {
		name      string
		cap       int
		interval  time.Duration
		wantForce int
	}{
		{"daily cap", 3, 0, 3},
		{"min interval", 20, time.Hour, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := stableApp(1)
			cfg := testConfig(t, app)
			cfg.Refresh.ForceDailyCap = tc.cap
			cfg.Refresh.ForceMinInterval = tc.interval
			e := newEnv(t, wechattest.Options{ForceMinInterval: time.Millisecond}, cfg)
			nodes := []*node{e.start("a"), e.start("b")}
			l := leader(t, 5*time.Second, nodes...)
			token(t, nodes[0], app.AppID)
			token(t, nodes[1], app.AppID)
			limited := 0
			// A client that reports every token it is given as failed.
			for i := range 10 {
				n := nodes[i%2]
				cur, err := n.b.AccessToken(testNS, app.AppID)
				if err != nil {
					t.Fatalf("AccessToken: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				got, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
				cancel()
				switch {
				case errors.Is(err, ErrForceLimited):
					limited++
				case err != nil:
					t.Fatalf("Invalidate #%d on %s: %v", i, n.b.id, err)
				case got.AccessToken == cur.AccessToken:
					t.Fatalf("Invalidate #%d returned the failed token", i)
				default:
					// The client's next report comes after both replicas
					// serve the new token (else it reports a stale one).
					for _, o := range nodes {
						waitFor(t, 3*time.Second, "replicas to agree", func() bool {
							tok, err := o.b.AccessToken(testNS, app.AppID)
							return err == nil && tok.AccessToken == got.AccessToken
						})
					}
				}
			}
			if got := l.wx.forced.Load(); got != int64(tc.wantForce) {
				t.Errorf("forced stable refreshes = %d; want %d", got, tc.wantForce)
			}
			if limited != 10-tc.wantForce {
				t.Errorf("ErrForceLimited answers = %d; want %d", limited, 10-tc.wantForce)
			}
			if got := e.sim.TokensIssued(app.AppID); got != 1+tc.wantForce {
				t.Errorf("tokens issued = %d; want %d", got, 1+tc.wantForce)
			}
			st := l.b.Status(context.Background())
			if st.Apps[0].ForcedToday != int64(tc.wantForce) {
				t.Errorf("Status forced_today = %d; want %d", st.Apps[0].ForcedToday, tc.wantForce)
			}
		})
	}
}

// TestExternalInvalidation: someone fetches a classic token behind the
// broker's back; the broker's token then fails with 40001 and the report
// brings exactly one recovery fetch, a metric and a warning.
func TestExternalInvalidation(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: 200 * time.Millisecond}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	l := leader(t, 5*time.Second, nodes...)
	follower := nodes[0]
	if follower == l {
		follower = nodes[1]
	}
	cur := token(t, follower, app.AppID)
	token(t, l, app.AppID)

	laptop, err := wechat.New(wechat.Options{BaseURL: e.sim.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.Token(context.Background(), app.AppID, secretOf(app.AppID)); err != nil {
		t.Fatalf("external fetch: %v", err)
	}
	waitFor(t, 2*time.Second, "the broker's token to be superseded", func() bool {
		return !e.sim.TokenValid(app.AppID, cur.AccessToken)
	})
	err = laptop.Call(context.Background(), "POST", "/cgi-bin/message/custom/send", cur.AccessToken, map[string]string{}, nil)
	var ae *wechat.APIError
	if !errors.As(err, &ae) || ae.Code != 40001 {
		t.Fatalf("API call with the superseded token = %v; want errcode 40001", err)
	}
	calls := e.sim.Calls(wechat.APIToken, app.AppID)
	got, err := follower.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceProxy)
	if err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if !e.sim.TokenValid(app.AppID, got.AccessToken) {
		t.Error("recovered token is not valid")
	}
	if n := e.sim.Calls(wechat.APIToken, app.AppID) - calls; n != 1 {
		t.Errorf("recovery made %d token calls; want 1", n)
	}
	if v := testutil.ToFloat64(l.m.ExternalInvalidation.WithLabelValues(testNS, app.AppID)); v != 1 {
		t.Errorf("wxbroker_external_invalidation_total = %v; want 1", v)
	}
	if !logged(l.logs, zapcore.WarnLevel, "invalidated outside the broker", app.AppID) {
		t.Error("no warning naming namespace and appid about the external invalidation")
	}
	if v := testutil.ToFloat64(follower.m.InvalidCredential.WithLabelValues(testNS, app.AppID, metrics.SourceProxy)); v != 1 {
		t.Errorf("wxbroker_invalid_credential_total{source=proxy} = %v; want 1", v)
	}
	noSecrets(t, l, secretOf(app.AppID), cur.AccessToken, got.AccessToken)
}

// TestTicketFollowsToken: a new access token brings a new ticket, and a
// ticket call rejected with 40001 refreshes the token conditionally.
func TestTicketFollowsToken(t *testing.T) {
	app := classicApp(1, "jsapi", "wx_card")
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: time.Second}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	var jsapi, card Ticket
	waitFor(t, 5*time.Second, "both tickets", func() bool {
		var err1, err2 error
		jsapi, err1 = n.b.Ticket(testNS, app.AppID, "jsapi")
		card, err2 = n.b.Ticket(testNS, app.AppID, "wx_card")
		return err1 == nil && err2 == nil
	})
	if _, err := n.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
		t.Fatal(err)
	}
	// The two tickets are refreshed independently: wait for both before
	// counting the calls.
	waitFor(t, 5*time.Second, "new jsapi and wx_card tickets", func() bool {
		j, err1 := n.b.Ticket(testNS, app.AppID, "jsapi")
		c, err2 := n.b.Ticket(testNS, app.AppID, "wx_card")
		return err1 == nil && err2 == nil && j.Ticket != jsapi.Ticket && c.Ticket != card.Ticket
	})
	if got := e.sim.Calls(wechat.APIGetTicket, app.AppID); got != 4 {
		t.Errorf("getticket calls = %d; want 4 (two types, two tokens)", got)
	}

	// getticket answers 40001: the broker refreshes the token and retries.
	tok := token(t, n, app.AppID)
	e.sim.Fail(wechat.APIGetTicket, 1, wechattest.Fault{Errcode: 40001})
	tm := n.b.el.term.Load()
	if _, err := n.b.lead.fetch(tm, n.b.catalog().apps[testNS][app.AppID].tickets["jsapi"], callPlain); err != nil {
		t.Fatalf("fetch of a ticket after 40001: %v", err)
	}
	waitFor(t, 5*time.Second, "a token refresh after getticket's 40001", func() bool {
		now, _ := n.b.AccessToken(testNS, app.AppID)
		return now.Generation > tok.Generation
	})
	if v := testutil.ToFloat64(n.m.InvalidCredential.WithLabelValues(testNS, app.AppID, metrics.SourceBroker)); v != 1 {
		t.Errorf("wxbroker_invalid_credential_total{source=broker} = %v; want 1", v)
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
