package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// reloadAll applies cfg to every node, prepared on all before any commits.
func reloadAll(t *testing.T, cfg *config.Config, nodes ...*node) {
	t.Helper()
	var commits []func()
	for _, n := range nodes {
		commit, err := n.b.PrepareReload(cfg)
		if err != nil {
			t.Fatalf("PrepareReload: %v", err)
		}
		commits = append(commits, commit)
	}
	for _, c := range commits {
		c()
	}
}

// withApps is a copy of cfg configuring apps in the test namespace.
func withApps(cfg *config.Config, apps ...*config.App) *config.Config {
	next := *cfg
	next.Namespaces = map[string]*config.Namespace{testNS: {Apps: apps}}
	return &next
}

// TestReloadChangesTheCredentialSet: a reload adds an app (fetched once, at
// the leader's next tick, and served by every replica), removes one (no
// longer served, refreshed or exported), leaves the others alone, and a new
// secret resumes a refresh that 40125 stopped; Resume on a follower asks
// the leader to retry.
func TestReloadChangesTheCredentialSet(t *testing.T) {
	kept, gone := classicApp(1), stableApp(2)
	e := newEnv(t, wechattest.Options{}, testConfig(t, kept, gone))
	added := classicApp(3)
	e.sim.AddApp(added.AppID, secretOf(added.AppID))
	a, b := e.start("a"), e.start("b")
	l := leader(t, 10*time.Second, a, b)
	f := a
	if l == a {
		f = b
	}
	for _, n := range []*node{a, b} {
		token(t, n, kept.AppID)
		token(t, n, gone.AppID)
	}
	keptCalls := e.sim.Calls(wechat.APIToken, kept.AppID)

	// Add app 3 with a wrong secret, remove app 2.
	wrong := *added
	wrong.Secret = "wrong-secret"
	reloadAll(t, withApps(e.cfg, kept, &wrong), a, b)
	for _, n := range []*node{a, b} {
		if _, err := n.b.AccessToken(testNS, gone.AppID); !errors.Is(err, ErrUnknownApp) {
			t.Errorf("removed app: AccessToken = %v; want ErrUnknownApp", err)
		}
		if got := testutil.CollectAndCount(n.m.RefreshDue, "wxbroker_token_refresh_due_timestamp_seconds"); got != 2 {
			t.Errorf("refresh-due series after the reload = %d; want 2 (kept and added apps)", got)
		}
	}
	waitFor(t, 10*time.Second, "the leader's refresh of the added app to stop on 40125", func() bool {
		return testutil.ToFloat64(l.m.RefreshStopped.WithLabelValues(testNS, added.AppID, KindAccessToken, "40125")) == 1
	})
	stopped := e.sim.Calls(wechat.APIToken, added.AppID)

	// Resume from the follower: the leader tries once more at once.
	if err := f.b.Resume(context.Background(), testNS, added.AppID); err != nil {
		t.Fatalf("Resume on the follower: %v", err)
	}
	waitFor(t, 5*time.Second, "the resumed call", func() bool { return e.sim.Calls(wechat.APIToken, added.AppID) > stopped })
	if err := l.b.Resume(context.Background(), testNS, kept.AppID); !errors.Is(err, ErrNotStopped) {
		t.Errorf("Resume of a running app on the leader = %v; want ErrNotStopped", err)
	}

	// The right secret resumes the stopped refresh at once, on its own.
	reloadAll(t, withApps(e.cfg, kept, added), a, b)
	for _, n := range []*node{a, b} {
		token(t, n, added.AppID)
	}
	if got := e.sim.Calls(wechat.APIToken, kept.AppID); got != keptCalls {
		t.Errorf("kept app: %d token calls, %d before the reloads; a reload must not refresh it", got, keptCalls)
	}
	if got := e.sim.Calls(wechat.APIStableToken, gone.AppID); got != 1 {
		t.Errorf("removed app: %d stable_token calls; want only the first (it is no longer refreshed)", got)
	}
}
