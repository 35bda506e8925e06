package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// killOutside fetches a token for appid as another process would, and
// waits until the simulator no longer accepts tok.
func killOutside(t *testing.T, e *env, appid, tok string) {
	t.Helper()
	outside, err := wechat.New(wechat.Options{BaseURL: e.sim.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outside.Token(t.Context(), appid, secretOf(appid)); err != nil {
		t.Fatalf("outside fetch: %v", err)
	}
	waitFor(t, 5*time.Second, "the outside fetch to kill the broker's token", func() bool {
		return !e.sim.TokenValid(appid, tok)
	})
}

// chargeCounter counts the Charge calls of the reports made on each node.
type chargeCounter struct{ n [3]atomic.Int64 }

func (c *chargeCounter) total() int64 { return c.n[0].Load() + c.n[1].Load() + c.n[2].Load() }

// report makes n concurrent reports of failed over nodes, each charged to
// its node's counter.
func (c *chargeCounter) report(t *testing.T, nodes []*node, appid, failed string, proof Proof, n int) ([]Token, []error) {
	t.Helper()
	return reportAll(nodes, n, func(ctx context.Context, b *Broker) (Token, error) {
		i := 0
		for j, nd := range nodes {
			if nd.b == b {
				i = j
			}
		}
		return b.ReportFailure(ctx, testNS, appid, Report{Token: failed, Source: metrics.SourceClient, Proof: proof,
			Charge: func() error { c.n[i].Add(1); return nil }})
	})
}

// Only a report that costs WeChat a call is charged: a burst of reports of
// one killed token over three replicas costs at most one charge per
// replica, a stale report and a report answered by a fresh verdict cost
// none.
func TestReportChargedOnlyWhenCosting(t *testing.T) {
	app := classicApp(1)
	cfg := slowHostConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: 20 * time.Millisecond}, cfg)
	// A verdict answers the reports of the last part of the test however
	// slowly a loaded host makes them.
	longVerdict := func(n *node, _ *redis.Options) { n.setup = func(b *Broker) { b.verdictReuse = time.Hour } }
	nodes := []*node{e.start("a", longVerdict), e.start("b", longVerdict), e.start("c", longVerdict)}
	leader(t, 5*time.Second, nodes...)
	var cur Token
	for _, n := range nodes {
		cur = token(t, n, app.AppID)
	}
	killOutside(t, e, app.AppID, cur.AccessToken)

	var c chargeCounter
	toks, errs := c.report(t, nodes, app.AppID, cur.AccessToken, Unproven, 300)
	for i, err := range errs {
		if err != nil || toks[i].AccessToken == cur.AccessToken {
			t.Fatalf("report #%d = generation %d, %v; want the new token", i, toks[i].Generation, err)
		}
	}
	for i := range nodes {
		if got := c.n[i].Load(); got > 1 {
			t.Errorf("node %d charged %d of 100 reports of one token; want at most 1", i, got)
		}
	}
	if c.total() < 1 {
		t.Error("no report was charged; the one that caused the refresh must be")
	}

	// The old token again: stale everywhere, free.
	before := c.total()
	_, errs = c.report(t, nodes, app.AppID, cur.AccessToken, Unproven, 30)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("stale report #%d: %v", i, err)
		}
	}
	if got := c.total() - before; got != 0 {
		t.Errorf("stale reports were charged %d times; want 0", got)
	}

	// A token WeChat still accepts: a burst costs one check and at most one
	// charge per replica; once every replica has heard the verdict (a
	// follower's forwarded report publishes it), reports answered by it are
	// free.
	live := toks[0]
	for _, n := range nodes {
		waitFor(t, 5*time.Second, "replicas to agree", func() bool {
			tok, err := n.b.AccessToken(testNS, app.AppID)
			return err == nil && tok.AccessToken == live.AccessToken
		})
	}
	var first chargeCounter
	_, errs = first.report(t, nodes, app.AppID, live.AccessToken, Unproven, 30)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("report of a live token #%d: %v", i, err)
		}
	}
	for i := range nodes {
		if got := first.n[i].Load(); got > 1 {
			t.Errorf("node %d charged %d of 10 reports of a live token; want at most 1", i, got)
		}
	}
	waitFor(t, 10*time.Second, "every replica to hear the verdict", func() bool {
		for _, n := range nodes {
			en, _ := n.b.entry(testNS, app.AppID)
			if v := en.token.verdict.Load(); v == nil || v.token != live.AccessToken {
				return false
			}
		}
		return true
	})
	before = c.total()
	checks := e.sim.Calls(wechat.APIDomainIP, app.AppID)
	toks, errs = c.report(t, nodes, app.AppID, live.AccessToken, Unproven, 60)
	for i, err := range errs {
		if err != nil || toks[i].AccessToken != live.AccessToken {
			t.Fatalf("report of a live token #%d = generation %d, %v; want it unchanged", i, toks[i].Generation, err)
		}
	}
	if got := c.total() - before; got != 0 {
		t.Errorf("reports answered by a fresh verdict were charged %d times; want 0", got)
	}
	if got := e.sim.Calls(wechat.APIDomainIP, app.AppID) - checks; got != 0 {
		t.Errorf("reports answered by a fresh verdict caused %d checks; want 0", got)
	}
}

// A refused charge spends nothing, on the leader and on a follower, and its
// error reaches the reporter.
func TestRefusedChargeSpendsNothing(t *testing.T) {
	app := classicApp(1)
	cfg := slowHostConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: 20 * time.Millisecond}, cfg)
	a, b := e.start("a"), e.start("b")
	lead := leader(t, 5*time.Second, a, b)
	follower := a
	if lead == a {
		follower = b
	}
	cur := token(t, lead, app.AppID)
	token(t, follower, app.AppID)
	killOutside(t, e, app.AppID, cur.AccessToken)
	tokens, checks := e.sim.Calls(wechat.APIToken, app.AppID), e.sim.Calls(wechat.APIDomainIP, app.AppID)
	errBudget := errors.New("over budget")
	for _, n := range []*node{lead, follower} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.b.ReportFailure(ctx, testNS, app.AppID, Report{Token: cur.AccessToken, Proof: Unproven,
			Charge: func() error { return errBudget }})
		cancel()
		if !errors.Is(err, errBudget) {
			t.Errorf("report with a refused charge = %v; want the charge's error", err)
		}
	}
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - tokens; got != 0 {
		t.Errorf("refused reports caused %d token calls; want 0", got)
	}
	if got := e.sim.Calls(wechat.APIDomainIP, app.AppID) - checks; got != 0 {
		t.Errorf("refused reports caused %d checks; want 0", got)
	}
}

// A MustConfirm report refreshes only when the check confirms the token
// failed: an undecided check (WeChat busy) refreshes nothing, on the leader
// and through a follower.
func TestMustConfirmReport(t *testing.T) {
	app := classicApp(1)
	cfg := slowHostConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: 20 * time.Millisecond}, cfg)
	a, b := e.start("a"), e.start("b")
	lead := leader(t, 5*time.Second, a, b)
	follower := a
	if lead == a {
		follower = b
	}
	cur := token(t, lead, app.AppID)
	token(t, follower, app.AppID)
	tokens := e.sim.Calls(wechat.APIToken, app.AppID)
	for _, n := range []*node{lead, follower} {
		e.sim.Fail(wechat.APIDomainIP, 1, wechattest.Fault{Errcode: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := n.b.ReportFailure(ctx, testNS, app.AppID, Report{Token: cur.AccessToken, Source: metrics.SourceProxy, Proof: MustConfirm})
		cancel()
		if !errors.Is(err, ErrNotConfirmed) {
			t.Errorf("MustConfirm report with an undecided check = %v; want ErrNotConfirmed", err)
		}
	}
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - tokens; got != 0 {
		t.Errorf("unconfirmed reports caused %d token calls; want 0", got)
	}
	killOutside(t, e, app.AppID, cur.AccessToken)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := follower.b.ReportFailure(ctx, testNS, app.AppID, Report{Token: cur.AccessToken, Source: metrics.SourceProxy, Proof: MustConfirm})
	if err != nil || got.AccessToken == cur.AccessToken {
		t.Fatalf("MustConfirm report of a killed token = generation %d, %v; want a new token", got.Generation, err)
	}
}
