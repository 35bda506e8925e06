package broker

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// gathered returns the series of metric name in reg as "label=value,..." →
// value, without creating any (testutil.ToFloat64 on a vector would).
func gathered(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(ls)
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// TestAlertSeriesExistFromStartUp: every per-app series an alert reads as an
// increase exists at 0 as soon as the broker is built, so the first event
// is an increase (WxbrokerExternalInvalidation, WxbrokerRefreshFailing), and
// every item has a refresh deadline (WxbrokerRefreshLate).
func TestAlertSeriesExistFromStartUp(t *testing.T) {
	classic, stable := classicApp(1, "jsapi"), stableApp(2)
	cfg := testConfig(t, classic, stable)
	reg := prometheus.NewRegistry()
	start := time.Date(2026, 3, 1, 17, 0, 0, 0, time.UTC)
	_, err := New(Options{Config: cfg, Redis: redisNotUsed(t), WeChat: &countingWeChat{}, Logger: zapNop(),
		Metrics: metrics.New(reg), Now: func() time.Time { return start }})
	if err != nil {
		t.Fatal(err)
	}
	ext := gathered(t, reg, "wxbroker_external_invalidation_total")
	refresh := gathered(t, reg, "wxbroker_token_refresh_total")
	due := gathered(t, reg, "wxbroker_token_refresh_due_timestamp_seconds")
	first := float64(start.Add(cfg.Leader.LockTTL+cfg.WeChat.Timeout).UnixMilli()) / 1e3
	for _, tc := range []struct{ appid, kind string }{
		{classic.AppID, KindAccessToken}, {classic.AppID, KindJSAPITicket}, {stable.AppID, KindAccessToken},
	} {
		t.Run(tc.appid+"/"+tc.kind, func(t *testing.T) {
			item := "appid=" + tc.appid + ",kind=" + tc.kind
			for _, r := range []string{metrics.ResultError, metrics.ResultSuccess} {
				if v, ok := refresh[item+",result="+r+",wx_namespace="+testNS]; !ok || v != 0 {
					t.Errorf("wxbroker_token_refresh_total{%s,result=%s} = %v, %v; want 0, present", item, r, v, ok)
				}
			}
			if v, ok := due[item+",wx_namespace="+testNS]; !ok || v != first {
				t.Errorf("wxbroker_token_refresh_due_timestamp_seconds{%s} = %v, %v; want %v (start + lock_ttl + wechat.timeout)", item, v, ok, first)
			}
			if tc.kind == KindAccessToken {
				if v, ok := ext["appid="+tc.appid+",wx_namespace="+testNS]; !ok || v != 0 {
					t.Errorf("wxbroker_external_invalidation_total{%s} = %v, %v; want 0, present", tc.appid, v, ok)
				}
			}
		})
	}
	if got := gathered(t, reg, "wxbroker_forced_refresh_limit")[""]; got != float64(cfg.Refresh.ForceDailyCap) {
		t.Errorf("wxbroker_forced_refresh_limit = %v; want %d", got, cfg.Refresh.ForceDailyCap)
	}
}

// TestFirstConfigErrorExportsStoppedState: the very first 40125 and 40164
// set wxbroker_refresh_stopped{errcode} to 1 (WxbrokerConfigError pages on
// it); when the leader steps down, the retries-stopped states and the
// day's quota counts it exported are cleared, so a former leader never pages.
func TestFirstConfigErrorExportsStoppedState(t *testing.T) {
	badSecret, whitelist, healthy := classicApp(1), stableApp(2), stableApp(3)
	badSecret.Secret = "wrong-secret"
	cfg := testConfig(t, badSecret, whitelist, healthy)
	e := newEnv(t, wechattest.Options{}, cfg)
	// The whitelist app allows only an address the broker does not call
	// from: WeChat (the simulator) answers its calls 40164.
	e.sim.SetAllowedIPs(whitelist.AppID, "10.255.255.1")
	n := e.start("a")
	leader(t, 5*time.Second, n)
	token(t, n, healthy.AppID)

	want := map[string]float64{
		"appid=" + badSecret.AppID + ",errcode=40125,kind=access_token,wx_namespace=" + testNS: 1,
		"appid=" + whitelist.AppID + ",errcode=40164,kind=access_token,wx_namespace=" + testNS: 1,
	}
	waitFor(t, 30*time.Second, "both stopped states", func() bool {
		return len(gathered(t, n.reg, "wxbroker_refresh_stopped")) == 2
	})
	got := gathered(t, n.reg, "wxbroker_refresh_stopped")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("wxbroker_refresh_stopped{%s} = %v; want %v (all: %v)", k, got[k], v, got)
		}
	}
	found40164 := false
	for k, v := range got {
		if strings.Contains(k, "errcode=40164") && v == 1 {
			found40164 = true
		}
	}
	if !found40164 {
		t.Errorf("no wxbroker_refresh_stopped{errcode=40164} = 1 after the first 40164: %v", got)
	}
	if len(gathered(t, n.reg, "wxbroker_wechat_quota_used")) == 0 {
		t.Fatal("the leader exports no wxbroker_wechat_quota_used")
	}

	n.stop()
	if got := gathered(t, n.reg, "wxbroker_refresh_stopped"); len(got) != 0 {
		t.Errorf("after stepping down, wxbroker_refresh_stopped = %v; want no series", got)
	}
	if got := gathered(t, n.reg, "wxbroker_wechat_quota_used"); len(got) != 0 {
		t.Errorf("after stepping down, wxbroker_wechat_quota_used = %v; want no series", got)
	}
	if got := gathered(t, n.reg, "wxbroker_leader")[""]; got != 0 {
		t.Errorf("after stepping down, wxbroker_leader = %v", got)
	}
}

// TestDayBoundaryResetsQuotaGauges: at UTC+8 midnight the quota and forced
// counts of the previous day go (a token valid across midnight makes no
// call that would overwrite them).
func TestDayBoundaryResetsQuotaGauges(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 15, 59, 0, 0, time.UTC)) // 23:59 UTC+8
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	if _, err := n.b.Invalidate(context.Background(), testNS, app.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
		t.Fatal(err)
	}
	settle(t, n, clock)
	quota := "api=token,appid=" + app.AppID + ",wx_namespace=" + testNS
	forced := "appid=" + app.AppID + ",wx_namespace=" + testNS
	if got := gathered(t, n.reg, "wxbroker_wechat_quota_used")[quota]; got != 2 {
		t.Fatalf("wxbroker_wechat_quota_used{%s} = %v before midnight; want 2", quota, got)
	}
	if got := gathered(t, n.reg, "wxbroker_forced_refresh_used")[forced]; got != 1 {
		t.Fatalf("wxbroker_forced_refresh_used{%s} = %v before midnight; want 1", forced, got)
	}
	clock.Advance(2 * time.Minute)
	waitFor(t, 5*time.Second, "the quota gauges to reset at UTC+8 midnight", func() bool {
		_, ok := gathered(t, n.reg, "wxbroker_wechat_quota_used")[quota]
		return !ok && gathered(t, n.reg, "wxbroker_forced_refresh_used")[forced] == 0
	})
}

// TestRefreshDeadlineBoundsTheSchedule: the exported refresh deadline is
// never before the time the scheduler picks (whatever the jitter), so a
// healthy broker never looks late, and it lies before the expiry.
func TestRefreshDeadlineBoundsTheSchedule(t *testing.T) {
	classic, stable := classicApp(1, "jsapi"), stableApp(2)
	cfg := testConfig(t, classic, stable)
	cfg.Refresh.StableRotationWindow = 5 * time.Minute
	b, err := New(Options{Config: cfg, Redis: redisNotUsed(t), WeChat: &countingWeChat{}, Logger: zapNop(),
		Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	s := newScheduler(b.lead, nil)
	now := b.now()
	life := 2 * time.Hour
	for _, it := range b.catalog().items {
		rec := &record{Value: "v-" + it.field, ExpiresAt: now.Add(life), FetchedAt: now, Rev: 1}
		if it.kind != KindAccessToken {
			rec.Src = shortHash(it.app.Load().token.cur.Load().Value)
		}
		it.cur.Store(rec)
		deadline := b.ex.refreshDeadline(it, rec)
		for _, j := range []float64{0, 0.5, 0.999999} {
			k := s.tasks[it]
			k.basedOn, k.jitter = rec.Rev, j
			if due := s.dueFor(k, now); due.After(deadline) {
				t.Errorf("%s %s (jitter %v): scheduled at %s, after the exported deadline %s",
					it.appid, it.kind, j, due.Sub(now), deadline.Sub(now))
			}
		}
		if !deadline.Before(rec.ExpiresAt) {
			t.Errorf("%s %s: deadline %s not before the expiry", it.appid, it.kind, deadline.Sub(now))
		}
		if it.kind == KindAccessToken && it.config().TokenMode == config.ModeStable {
			// The deadline leaves more than half of the rotation window, so
			// WxbrokerRefreshLate (deadline + 30 s, evaluated every 15 s)
			// pages with more than half of it left.
			if left := rec.ExpiresAt.Sub(deadline) - 45*time.Second; left <= cfg.Refresh.StableRotationWindow/2 {
				t.Errorf("stable token: the alert would fire with %s left; want more than %s", left, cfg.Refresh.StableRotationWindow/2)
			}
		}
	}
}

// redisNotUsed is a client for a broker that is built but never run.
func redisNotUsed(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
