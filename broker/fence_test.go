package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// idleBroker builds a broker that is not running, for direct store tests.
func idleBroker(t *testing.T, cfg *config.Config, rdb redis.UniversalClient) *Broker {
	t.Helper()
	b, err := New(Options{Config: cfg, Redis: rdb, WeChat: &countingWeChat{}, Logger: zaptest.NewLogger(t),
		Metrics: metrics.New(prometheus.NewRegistry()), InstanceID: "idle"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// leadership obtains the lock as instance id (after dropping any holder) and
// takes a new epoch, as campaign does.
func leadership(t *testing.T, b *Broker, rdb *redis.Client, id string) fence {
	t.Helper()
	ctx := t.Context()
	rdb.Del(ctx, b.store.keys.lock())
	lock, err := redislock.Obtain(ctx, rdb, b.store.keys.lock(), time.Minute, &redislock.Options{Metadata: "|" + id})
	if err != nil {
		t.Fatalf("obtain: %v", err)
	}
	epoch, err := rdb.Incr(ctx, b.store.keys.epoch()).Result()
	if err != nil {
		t.Fatalf("incr epoch: %v", err)
	}
	return fence{lockValue: lock.Token() + lock.Metadata(), epoch: epochString(epoch)}
}

func TestFencedWrites(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	now := time.Now()
	tests := []struct {
		name string
		// after A wrote, change the world and return the fence of whoever leads now
		change func(t *testing.T, b *Broker, a fence) fence
	}{
		{"newer epoch issued, same lock value", func(t *testing.T, b *Broker, a fence) fence {
			rdb.Incr(t.Context(), b.store.keys.epoch())
			return fence{}
		}},
		{"lock changed hands", func(t *testing.T, b *Broker, a fence) fence {
			return leadership(t, b, rdb, "b")
		}},
		{"lock expired", func(t *testing.T, b *Broker, a fence) fence {
			rdb.Del(t.Context(), b.store.keys.lock())
			return fence{}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			b := idleBroker(t, testConfig(t, classicApp(1)), rdb)
			it := b.catalog().items[0]
			a := leadership(t, b, rdb, "a")
			rec, err := testWrite(ctx, b, a, it, "tok-a", now.Add(time.Hour), now, "", false, 0)
			if err != nil || rec.Gen != 1 {
				t.Fatalf("first write = %+v, %v; want generation 1", rec, err)
			}
			next := tc.change(t, b, a)

			if _, err := testWrite(ctx, b, a, it, "tok-stale", now.Add(time.Hour), now, "", false, rec.Gen); !errors.Is(err, errFenced) {
				t.Errorf("stale writeRecord = %v; want errFenced", err)
			}
			if _, err := b.lead.preCall(ctx, a, it, "token", callPlain); !errors.Is(err, errFenced) {
				t.Errorf("stale preCall = %v; want errFenced", err)
			}
			if err := b.lead.writeStatus(ctx, a, it, &refreshStatus{}); !errors.Is(err, errFenced) {
				t.Errorf("stale writeStatus = %v; want errFenced", err)
			}
			if err := b.rep.reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if got := it.cur.Load(); got.Value != "tok-a" {
				t.Errorf("stored token = %q after a fenced write; want tok-a", got.Value)
			}
			if next.lockValue == "" {
				return
			}
			rec2, err := testWrite(ctx, b, next, it, "tok-b", now.Add(time.Hour), now, "", false, rec.Gen)
			if err != nil || rec2.Gen != 2 || rec2.Rev <= rec.Rev {
				t.Errorf("new leader's write = %+v, %v; want generation 2 and a higher revision than %d", rec2, err, rec.Rev)
			}
		})
	}
}

func TestRecordRoundTrip(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	b := idleBroker(t, testConfig(t, classicApp(1, "jsapi")), rdb)
	ctx := context.Background()
	f := leadership(t, b, rdb, "a")
	exp := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	at := time.UnixMilli(time.Now().UnixMilli())
	tk := b.catalog().apps[testNS][appID(1)].tickets["jsapi"]
	w, err := testWrite(ctx, b, f, tk, "ticket-1", exp, at, "abc", false, 0)
	if err != nil {
		t.Fatal(err)
	}
	same, err := testWrite(ctx, b, f, tk, "ticket-1", exp.Add(-time.Minute), at, "abc", true, w.Gen)
	if err != nil || same.Gen != w.Gen {
		t.Fatalf("rewrite of the same value = %+v, %v; want generation %d kept", same, err, w.Gen)
	}
	other := idleBroker(t, b.cfg, rdb)
	if err := other.rep.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := other.Ticket(testNS, appID(1), "jsapi")
	if err != nil || got.Ticket != "ticket-1" || !got.ExpiresAt.Equal(exp.Add(-time.Minute)) {
		t.Errorf("Ticket after reconcile = %+v, %v; want ticket-1 expiring %v", got, err, exp.Add(-time.Minute))
	}
	if _, err := other.Ticket(testNS, appID(1), "wx_card"); !errors.Is(err, ErrUnknownTicket) {
		t.Errorf("Ticket(wx_card) = %v; want ErrUnknownTicket", err)
	}
	if _, err := other.AccessToken(testNS, appID(9)); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("AccessToken(unknown) = %v; want ErrUnknownApp", err)
	}
	if _, err := other.AccessToken(testNS, appID(1)); !errors.Is(err, ErrNoToken) {
		t.Errorf("AccessToken(no token yet) = %v; want ErrNoToken", err)
	}
}

// TestFencedRejectionStepsDown (invariant 2): a leader whose write the fence
// rejects (a newer epoch exists) steps down instead of leading on with
// writes that can never land, and leadership resumes under a new epoch.
func TestFencedRejectionStepsDown(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	cur := token(t, n, app.AppID)
	tm := n.b.el.term.Load()
	newer, err := e.redis.Client(t).Incr(context.Background(), n.b.store.keys.epoch()).Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := n.wx.total()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := n.b.Invalidate(ctx, testNS, app.AppID, cur.AccessToken, metrics.SourceClient)
	select {
	case <-tm.ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the leader still leads after its write was fenced out")
	}
	if cause := context.Cause(tm.ctx); !errors.Is(cause, errFenced) {
		t.Errorf("term ended by %v; want errFenced", cause)
	}
	if v := testutil.ToFloat64(n.m.FencedWritesRejected); v < 1 {
		t.Errorf("wxbroker_fenced_writes_rejected_total = %v; want at least 1", v)
	}
	waitFor(t, 5*time.Second, "leadership under a newer epoch", func() bool {
		nt := n.b.el.term.Load()
		return nt != nil && nt != tm && nt.epoch > newer
	})
	// The report was handed on to the next term, which refreshed once.
	if err != nil || got.AccessToken == cur.AccessToken {
		t.Errorf("Invalidate = generation %d, %v; want a new token from the next term", got.Generation, err)
	}
	if d := n.wx.total() - calls; d != 1 {
		t.Errorf("%d credential calls for one invalidation; want 1 (none under the fenced term)", d)
	}
}
