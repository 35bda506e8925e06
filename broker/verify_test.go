package broker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// reportAllUnproven makes n unproven reports of failed, spread over nodes,
// all released at once.
func reportAllUnproven(t testing.TB, nodes []*node, appid, failed string, n int) ([]Token, []error) {
	t.Helper()
	return reportAll(nodes, n, func(ctx context.Context, b *Broker) (Token, error) {
		return b.InvalidateUnproven(ctx, testNS, appid, failed, metrics.SourceCompat)
	})
}

// slowHostConfig gives WeChat calls room on a loaded test host: 1000
// goroutines under -race can delay a check past the default 400ms, and an
// undecided check trusts the report.
func slowHostConfig(t testing.TB, apps ...*config.App) *config.Config {
	cfg := testConfig(t, apps...)
	cfg.WeChat.Timeout = 2 * time.Second
	cfg.Leader = config.Leader{LockTTL: 8 * time.Second, RenewInterval: time.Second}
	return cfg
}

func sumNodes(nodes []*node, f func(*node) float64) float64 {
	var s float64
	for _, n := range nodes {
		s += f(n)
	}
	return s
}

// A token WeChat still accepts is answered unchanged: 1000 concurrent
// unproven reports over two replicas cost one check and no token call.
func TestUnprovenReportOfValidToken(t *testing.T) {
	app := stableApp(1)
	cfg := slowHostConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	leader(t, 5*time.Second, nodes...)
	cur := token(t, nodes[0], app.AppID)
	token(t, nodes[1], app.AppID)
	stables := e.sim.Calls(wechat.APIStableToken, app.AppID)

	toks, errs := reportAllUnproven(t, nodes, app.AppID, cur.AccessToken, 1000)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("InvalidateUnproven #%d: %v", i, err)
		}
		if toks[i].AccessToken != cur.AccessToken {
			t.Fatalf("InvalidateUnproven #%d returned generation %d; want the accepted token %d unchanged", i, toks[i].Generation, cur.Generation)
		}
	}
	if got := e.sim.Calls(wechat.APIDomainIP, app.AppID); got != 1 {
		t.Errorf("1000 reports of a valid token caused %d checks; want 1", got)
	}
	if got := e.sim.Calls(wechat.APIStableToken, app.AppID) - stables; got != 0 {
		t.Errorf("1000 reports of a valid token caused %d stable_token calls; want 0", got)
	}
	if !e.sim.TokenValid(app.AppID, cur.AccessToken) {
		t.Error("the reported token was killed")
	}
	falseReports := sumNodes(nodes, func(n *node) float64 {
		return testutil.ToFloat64(n.m.FalseReports.WithLabelValues(testNS, app.AppID, metrics.SourceCompat))
	})
	invalid := sumNodes(nodes, func(n *node) float64 {
		return testutil.ToFloat64(n.m.InvalidCredential.WithLabelValues(testNS, app.AppID, metrics.SourceCompat))
	})
	if falseReports != 1000 || invalid != 0 {
		t.Errorf("false reports = %v, invalid credentials = %v; want 1000 and 0", falseReports, invalid)
	}
}

// A proven report (the gateway's, the login endpoints') is never checked.
func TestProvenReportIsNotChecked(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	leader(t, 5*time.Second, nodes...)
	cur := token(t, nodes[1], app.AppID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := nodes[1].b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceProxy)
	if err != nil || got.AccessToken == cur.AccessToken {
		t.Fatalf("Invalidate = generation %d, %v; want a new token", got.Generation, err)
	}
	if n := e.sim.Calls(wechat.APIDomainIP, app.AppID); n != 0 {
		t.Errorf("a proven report caused %d checks; want 0", n)
	}
}

// A token killed outside the broker fails the check: 1000 concurrent
// unproven reports over two replicas cost one check and one token call.
func TestUnprovenReportOfKilledToken(t *testing.T) {
	app := classicApp(1)
	cfg := slowHostConfig(t, app)
	e := newEnv(t, wechattest.Options{Overlap: 20 * time.Millisecond}, cfg)
	nodes := []*node{e.start("a"), e.start("b")}
	leader(t, 5*time.Second, nodes...)
	cur := token(t, nodes[0], app.AppID)
	token(t, nodes[1], app.AppID)

	// Another process fetches a token with the same AppID.
	outside, err := wechat.New(wechat.Options{BaseURL: e.sim.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outside.Token(t.Context(), app.AppID, secretOf(app.AppID)); err != nil {
		t.Fatalf("outside fetch: %v", err)
	}
	waitFor(t, 5*time.Second, "the outside fetch to kill the broker's token", func() bool {
		return !e.sim.TokenValid(app.AppID, cur.AccessToken)
	})
	tokens := e.sim.Calls(wechat.APIToken, app.AppID)

	toks, errs := reportAllUnproven(t, nodes, app.AppID, cur.AccessToken, 1000)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("InvalidateUnproven #%d: %v", i, err)
		}
		if toks[i].AccessToken == cur.AccessToken || toks[i].AccessToken != toks[0].AccessToken {
			t.Fatalf("InvalidateUnproven #%d returned generation %d; want one new token for all", i, toks[i].Generation)
		}
	}
	if got := e.sim.Calls(wechat.APIDomainIP, app.AppID); got != 1 {
		t.Errorf("1000 reports of a killed token caused %d checks; want 1", got)
	}
	if got := e.sim.Calls(wechat.APIToken, app.AppID) - tokens; got != 1 {
		t.Errorf("1000 reports of a killed token caused %d token calls; want 1", got)
	}
	if !e.sim.TokenValid(app.AppID, toks[0].AccessToken) {
		t.Error("the new token is not valid at the simulator")
	}
	falseReports := sumNodes(nodes, func(n *node) float64 {
		return testutil.ToFloat64(n.m.FalseReports.WithLabelValues(testNS, app.AppID, metrics.SourceCompat))
	})
	if falseReports != 0 {
		t.Errorf("false reports = %v; want 0", falseReports)
	}
}

// A check WeChat cannot answer (system busy) trusts the report.
func TestUncheckableReportIsTrusted(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	e.sim.Fail(wechat.APIDomainIP, 1, wechattest.Fault{Errcode: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := n.b.InvalidateUnproven(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	if err != nil || got.AccessToken == cur.AccessToken {
		t.Fatalf("InvalidateUnproven = generation %d, %v; want a new token", got.Generation, err)
	}
	if v := testutil.ToFloat64(n.m.WeChatErrors.WithLabelValues(testNS, app.AppID, wechat.APIDomainIP, "-1")); v != 1 {
		t.Errorf("wxbroker_wechat_errors_total{api=get_api_domain_ip,errcode=-1} = %v; want 1", v)
	}
}
