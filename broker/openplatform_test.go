package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// These tests run the Open Platform engine (openplatform.go, oprefresh.go,
// opcache.go, store_platform.go) against a real redis-server and the
// simulator's component rules: verify tickets, authorization codes,
// authorizer refresh tokens that die when rotated or revoked (61023), and
// api_get_authorizer_list. Events are handed to Platform.HandleEvent as the
// event receiver (broker/api) does once it has decrypted them.

const testAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

func compID(i int) string { return fmt.Sprintf("wx%016x", 0xc0000+i) }
func authID(i int) string { return fmt.Sprintf("wx%016x", 0xd0000+i) }

// platformConfig is testConfig with the components comps in namespace
// "prod" and a fresh refresh-token key.
func platformConfig(t testing.TB, comps ...string) *config.Config {
	cfg := testConfig(t)
	ns := cfg.Namespaces[testNS]
	for _, c := range comps {
		ns.Components = append(ns.Components, &config.Component{AppID: c, Secret: config.Secret(secretOf(c)),
			Token: "msgtoken", EncodingAESKey: testAESKey})
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	cfg.OpenPlatform.RefreshTokenEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString(key))
	return cfg
}

// addComponents registers the env's components with its simulator, without
// an event URL: the tests hand the events to HandleEvent themselves.
func (e *env) addComponents(rotate bool) {
	e.t.Helper()
	for _, ref := range e.cfg.Components() {
		c := ref.Component.AppID
		if err := e.sim.AddComponent(wechattest.Component{AppID: c, Secret: secretOf(c), Token: "msgtoken",
			EncodingAESKey: testAESKey, RotateRefreshTokens: rotate}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// event hands ev, stamped now (whole seconds, as on the wire), to p.
func handle(t testing.TB, p *Platform, comp string, ev msgcrypt.Event) {
	t.Helper()
	ev.AppID = comp
	if ev.CreateTime.IsZero() {
		ev.CreateTime = time.Now().Truncate(time.Second)
	}
	if err := p.HandleEvent(t.Context(), testNS, comp, ev); err != nil {
		t.Fatalf("HandleEvent(%s): %v", ev.InfoType, err)
	}
}

// pushTicket mints a verify ticket at the simulator and hands it to p.
func (e *env) pushTicket(p *Platform, comp string) string {
	e.t.Helper()
	tk, err := e.sim.PushTicket(e.t.Context(), comp)
	if err != nil {
		e.t.Fatal(err)
	}
	handle(e.t, p, comp, msgcrypt.Event{InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: tk})
	return tk
}

// authorize has authorizer a confirm the simulator's authorization page of
// comp and hands the authorized event to p.
func (e *env) authorize(p *Platform, comp, a string) {
	e.t.Helper()
	code, err := e.sim.Authorize(e.t.Context(), comp, a)
	if err != nil {
		e.t.Fatal(err)
	}
	handle(e.t, p, comp, msgcrypt.Event{InfoType: msgcrypt.InfoAuthorized, AuthorizerAppID: a, AuthorizationCode: code})
}

// azToken waits until n serves an authorizer token for a and returns it.
func azToken(t testing.TB, n *node, comp, a string) Token {
	t.Helper()
	var tok Token
	waittest.For(t, "an authorizer token for "+a, 30*time.Second, func() bool {
		var err error
		tok, err = n.b.Platform().AuthorizerToken(testNS, comp, a)
		return err == nil
	})
	return tok
}

// storedRefreshToken decrypts the refresh token stored with a's record.
func storedRefreshToken(t testing.TB, n *node, comp, a string) string {
	t.Helper()
	raw, err := n.rdb.HGet(t.Context(), n.b.store.keys.tok(testNS), comp+"/"+a+"/"+KindAuthorizerToken).Result()
	if err != nil {
		t.Fatalf("read the authorizer record: %v", err)
	}
	r, err := parseRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := n.b.Platform().sealer()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := s.open(r.Sealed)
	if err != nil {
		t.Fatalf("open the stored refresh token: %v", err)
	}
	return rt
}

// noPlaintext scans every key of the test's prefix in Redis and fails when
// any of secrets appears in a key or a value.
func noPlaintext(t testing.TB, rdb *redis.Client, prefix string, secrets ...string) {
	t.Helper()
	ctx := t.Context()
	var keys []string
	iter := rdb.Scan(ctx, 0, "*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("no keys in redis: the scan is broken")
	}
	seen := 0
	for _, k := range keys {
		var texts []string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			texts = append(texts, rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				texts = append(texts, f, v)
			}
		case "set":
			texts = append(texts, rdb.SMembers(ctx, k).Val()...)
		case "list":
			texts = append(texts, rdb.LRange(ctx, k, 0, -1).Val()...)
		case "zset":
			texts = append(texts, rdb.ZRange(ctx, k, 0, -1).Val()...)
		default:
			t.Errorf("key %s of type %s not scanned", k, typ)
		}
		texts = append(texts, k)
		if strings.Contains(k, prefix) {
			seen++
		}
		for _, s := range secrets {
			for _, v := range texts {
				if s != "" && strings.Contains(v, s) {
					t.Errorf("redis key %s holds a secret in clear (%.12s…)", k, s)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatalf("no key under prefix %s: the scan is broken", prefix)
	}
}

// countingPlatform counts the Open Platform calls one broker makes and can
// run a hook after each.
type countingPlatform struct {
	inner      PlatformWeChat
	component  atomic.Int64
	authorizer atomic.Int64
	queryAuth  atomic.Int64
	list       atomic.Int64
	push       atomic.Int64

	mu    sync.Mutex
	after func(api string, err error)
}

func (c *countingPlatform) done(api string, err error) {
	c.mu.Lock()
	h := c.after
	c.mu.Unlock()
	if h != nil {
		h(api, err)
	}
}

func (c *countingPlatform) ComponentToken(ctx context.Context, comp, secret, ticket string) (wechat.ComponentToken, error) {
	c.component.Add(1)
	tok, err := c.inner.ComponentToken(ctx, comp, secret, ticket)
	c.done(wechat.APIComponentToken, err)
	return tok, err
}

func (c *countingPlatform) AuthorizerToken(ctx context.Context, ct, comp, a, rt string) (wechat.AuthorizerToken, error) {
	c.authorizer.Add(1)
	tok, err := c.inner.AuthorizerToken(ctx, ct, comp, a, rt)
	c.done(wechat.APIAuthorizerToken, err)
	return tok, err
}

func (c *countingPlatform) StartPushTicket(ctx context.Context, comp, secret string) error {
	c.push.Add(1)
	err := c.inner.StartPushTicket(ctx, comp, secret)
	c.done("api_start_push_ticket", err)
	return err
}

func (c *countingPlatform) PreAuthCode(ctx context.Context, ct, comp string) (wechat.PreAuthCode, error) {
	return c.inner.PreAuthCode(ctx, ct, comp)
}

func (c *countingPlatform) QueryAuth(ctx context.Context, ct, comp, code string) (wechat.Authorization, error) {
	c.queryAuth.Add(1)
	a, err := c.inner.QueryAuth(ctx, ct, comp, code)
	c.done(wechat.APIQueryAuth, err)
	return a, err
}

func (c *countingPlatform) AuthorizerList(ctx context.Context, ct, comp string, offset, count int) ([]wechat.AuthorizerEntry, int, error) {
	c.list.Add(1)
	l, n, err := c.inner.AuthorizerList(ctx, ct, comp, offset, count)
	c.done(wechat.APIGetAuthorizerList, err)
	return l, n, err
}

var _ PlatformWeChat = (*countingPlatform)(nil)

// azGauge is wxbroker_open_platform_authorizers{state} of comp on n.
func azGauge(n *node, comp, state string) float64 {
	return testutil.ToFloat64(n.m.OpenPlatform.Authorizers.WithLabelValues(testNS, comp, state))
}

// TestPlatformVerifyTicket: a pushed component_verify_ticket is stored for
// every replica, the one with the latest CreateTime wins whatever the order
// of arrival, one past its 12 hours is ignored, and the component token is
// minted with it as soon as it arrives (none before: api_start_push_ticket
// is asked for instead).
func TestPlatformVerifyTicket(t *testing.T) {
	comp := compID(1)
	cfg := platformConfig(t, comp)
	e := newEnv(t, wechattest.Options{}, cfg)
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")

	waittest.For(t, "api_start_push_ticket without a ticket", 10*time.Second, func() bool { return a.pw.push.Load() >= 1 })
	if _, err := a.b.Platform().ComponentToken(testNS, comp); !errors.Is(err, ErrNoToken) {
		t.Fatalf("ComponentToken before any ticket = %v; want ErrNoToken", err)
	}

	now := time.Now().Truncate(time.Second)
	st := opStoreOf(a.b.store)
	handle(t, b.b.Platform(), comp, msgcrypt.Event{InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "ticket-new", CreateTime: now})
	handle(t, b.b.Platform(), comp, msgcrypt.Event{InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "ticket-old", CreateTime: now.Add(-10 * time.Minute)})
	handle(t, b.b.Platform(), comp, msgcrypt.Event{InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "ticket-dead", CreateTime: now.Add(-13 * time.Hour)})
	tk, at, ok, err := st.opTicket(t.Context(), testNS, comp)
	if err != nil || !ok || tk != "ticket-new" || !at.Equal(now) {
		t.Fatalf("stored ticket = %q at %s (%v, %v); want ticket-new at %s", tk, at, ok, err, now)
	}
	ttl := a.rdb.PTTL(t.Context(), a.b.store.keys.opTicket(testNS, comp)).Val()
	if ttl <= 11*time.Hour || ttl > 12*time.Hour {
		t.Errorf("ticket TTL = %s; want its 12 hours from CreateTime", ttl)
	}
	for _, n := range []*node{a, b} {
		waittest.For(t, "replica to learn the ticket and export its CreateTime", 5*time.Second, func() bool {
			tk, _, ok := n.b.Platform().cache.ticket(testNS, comp)
			return ok && tk == "ticket-new" &&
				testutil.ToFloat64(n.m.OpenPlatform.VerifyTicket.WithLabelValues(testNS, comp)) == float64(now.Unix())
		})
	}
	// A ticket the simulator minted makes the component token.
	real := e.pushTicket(b.b.Platform(), comp)
	var ct Token
	waittest.For(t, "a component token on the follower", 10*time.Second, func() bool {
		ct, err = b.b.Platform().ComponentToken(testNS, comp)
		return err == nil
	})
	if tk, _, _, _ := st.opTicket(t.Context(), testNS, comp); tk != real {
		t.Errorf("stored ticket %q; want the newest %q", tk, real)
	}
	if ns, c, az, ok := b.b.Platform().ByToken(ct.AccessToken); !ok || ns != testNS || c != comp || az != "" {
		t.Errorf("ByToken(component token) = %q %q %q %v", ns, c, az, ok)
	}
	if _, _, ok := a.b.AppByToken(ct.AccessToken); ok {
		t.Error("AppByToken names an app for a component token")
	}
	// Unknown components answer ErrUnknownComponent everywhere.
	if _, err := a.b.Platform().ComponentToken(testNS, compID(9)); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("ComponentToken(unknown) = %v", err)
	}
	if err := a.b.Platform().HandleEvent(t.Context(), testNS, compID(9), msgcrypt.Event{}); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("HandleEvent(unknown) = %v", err)
	}
}

// TestPlatformAuthorizerServedByReplicas: an authorized event received by a
// follower makes the leader exchange the code (api_query_auth); both
// replicas serve the authorizer token, which the leader refreshes ahead of
// its expiry with the stored refresh token; the listing shows it active.
func TestPlatformAuthorizerServedByReplicas(t *testing.T) {
	comp, az := compID(1), authID(1)
	cfg := platformConfig(t, comp)
	const ttl = 4 * time.Second
	e := newEnv(t, wechattest.Options{TokenTTL: ttl}, cfg)
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(b.b.Platform(), comp)
	e.authorize(b.b.Platform(), comp, az)

	first := azToken(t, b, comp, az)
	if !e.sim.TokenValid(az, first.AccessToken) {
		t.Fatal("the served authorizer token is not valid at the simulator")
	}
	if a.pw.queryAuth.Load() != 1 {
		t.Errorf("api_query_auth calls = %d; want 1", a.pw.queryAuth.Load())
	}
	// Refreshed ahead of expiry, served by the follower too.
	var next Token
	waittest.For(t, "the authorizer token to be refreshed", 3*ttl, func() bool {
		var err error
		next, err = b.b.Platform().AuthorizerToken(testNS, comp, az)
		return err == nil && next.AccessToken != first.AccessToken
	})
	if !time.Now().Before(first.ExpiresAt) {
		t.Errorf("the successor arrived at %s, after the previous token expired at %s", time.Now(), first.ExpiresAt)
	}
	if ns, c, got, ok := b.b.Platform().ByToken(next.AccessToken); !ok || ns != testNS || c != comp || got != az {
		t.Errorf("ByToken(authorizer token) = %q %q %q %v", ns, c, got, ok)
	}
	if ns, c, got, ok := b.b.Platform().ByToken(first.AccessToken); !ok || got != az || ns != testNS || c != comp {
		t.Errorf("ByToken(previous authorizer token within the overlap) = %q %q %q %v", ns, c, got, ok)
	}
	list, err := b.b.Platform().Authorizers(t.Context(), testNS, comp)
	if err != nil || len(list) != 1 || list[0].AppID != az || list[0].State != StateActive || list[0].Source != SourceEvent || list[0].ExpiresAt.IsZero() {
		t.Errorf("Authorizers = %+v, %v", list, err)
	}
	if got := azGauge(b, comp, metrics.AuthorizerActive); got != 1 {
		t.Errorf("authorizers{state=active} = %v; want 1", got)
	}
	ok := testutil.ToFloat64(a.m.TokenRefresh.WithLabelValues(testNS, comp, KindAuthorizerToken, metrics.ResultSuccess))
	if ok < 2 {
		t.Errorf("token_refresh_total{appid=component, kind=authorizer_access_token, result=success} = %v; want >= 2", ok)
	}
	if _, err := b.b.Platform().AuthorizerToken(testNS, comp, authID(7)); !errors.Is(err, ErrUnknownAuthorizer) {
		t.Errorf("AuthorizerToken(never authorized) = %v; want ErrUnknownAuthorizer", err)
	}
	rt, _ := e.sim.RefreshToken(comp, az)
	if got := storedRefreshToken(t, a, comp, az); got != rt {
		t.Error("the stored refresh token is not the simulator's current one")
	}
	noPlaintext(t, a.rdb, cfg.Redis.KeyPrefix, rt)
}
