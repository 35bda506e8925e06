package broker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestQuotaCountsEveryCall (invariant 7): every credential call — token,
// stable_token, getticket, normal or forced — is counted per app on the UTC+8
// day, in Redis, in the quota gauge and in Status. The clock stands at 01:00
// UTC+8, still the previous day in UTC.
func TestQuotaCountsEveryCall(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 3, 1, 17, 0, 0, 0, time.UTC))
	const wechatDay = "20260302"
	classic, stable := classicApp(1, "jsapi"), stableApp(2)
	cfg := testConfig(t, classic, stable)
	e := newEnv(t, wechattest.Options{Now: clock.Now}, cfg)
	n := e.start("a", withClock(clock))
	leader(t, 5*time.Second, n)
	cur := token(t, n, classic.AppID)
	token(t, n, stable.AppID)
	var first Ticket
	waitFor(t, 5*time.Second, "the first ticket", func() bool {
		var err error
		first, err = n.b.Ticket(testNS, classic.AppID, "jsapi")
		return err == nil
	})
	// A forced (invalidation) fetch, and the ticket its token brings.
	if _, err := n.b.Invalidate(context.Background(), testNS, classic.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the second ticket", func() bool {
		tk, err := n.b.Ticket(testNS, classic.AppID, "jsapi")
		return err == nil && tk.Ticket != first.Ticket
	})

	rdb := e.redis.Client(t)
	st := n.b.Status(context.Background())
	for _, tc := range []struct {
		app  *config.App
		api  string
		want int
	}{
		{classic, wechat.APIToken, 2},
		{classic, wechat.APIGetTicket, 2},
		{stable, wechat.APIStableToken, 1},
	} {
		if got := e.sim.Calls(tc.api, tc.app.AppID); got != tc.want {
			t.Fatalf("simulator saw %d %s calls; want %d", got, tc.api, tc.want)
		}
		key := n.b.store.keys.quota(testNS, tc.app.AppID, tc.api, wechatDay)
		if got, err := rdb.Get(context.Background(), key).Int(); err != nil || got != tc.want {
			t.Errorf("%s = %d, %v; want %d (one per call, on the UTC+8 day)", key, got, err, tc.want)
		}
		if got := testutil.ToFloat64(n.m.WeChatQuotaUsed.WithLabelValues(testNS, tc.app.AppID, tc.api)); int(got) != tc.want {
			t.Errorf("wxbroker_wechat_quota_used{%s,%s} = %v; want %d", tc.app.AppID, tc.api, got, tc.want)
		}
		for _, a := range st.Apps {
			if a.AppID == tc.app.AppID && a.FetchesToday[tc.api] != int64(tc.want) {
				t.Errorf("Status fetches_today[%s] of %s = %d; want %d", tc.api, tc.app.AppID, a.FetchesToday[tc.api], tc.want)
			}
		}
	}
	key := n.b.store.keys.force(testNS, classic.AppID, wechatDay)
	if got, err := rdb.Get(context.Background(), key).Int(); err != nil || got != 1 {
		t.Errorf("%s = %d, %v; want 1 forced fetch", key, got, err)
	}
}
