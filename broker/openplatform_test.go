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
	for _, n := range []*node{a, b} {
		noSeriesOf(t, n, az)
	}
}

// noSeriesOf fails when a metric series of n carries the label value v (an
// authorizer has no series of its own).
func noSeriesOf(t *testing.T, n *node, v string) {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == v {
					t.Errorf("series %s{%s=%q}: an authorizer has no series of its own", mf.GetName(), l.GetName(), v)
				}
			}
		}
	}
}

// TestPlatformRotatedRefreshToken: with WeChat rotating refresh tokens
// (every answer a new one, the one sent dead at once), each refresh stores
// the new refresh token in the same fenced write as the access token, so
// refreshes keep working; a refresh token retired behind the broker's back
// (61023) is recovered from api_get_authorizer_list.
func TestPlatformRotatedRefreshToken(t *testing.T) {
	comp, az := compID(1), authID(1)
	cfg := platformConfig(t, comp)
	const ttl = 2 * time.Second
	e := newEnv(t, wechattest.Options{TokenTTL: ttl}, cfg)
	e.addComponents(true)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	e.pushTicket(a.b.Platform(), comp)
	e.authorize(a.b.Platform(), comp, az)
	azToken(t, a, comp, az)

	okRefreshes := func() float64 {
		return testutil.ToFloat64(a.m.TokenRefresh.WithLabelValues(testNS, comp, KindAuthorizerToken, metrics.ResultSuccess))
	}
	waittest.For(t, "three refreshes with rotated refresh tokens", 10*ttl, func() bool { return okRefreshes() >= 4 })
	if n := testutil.ToFloat64(a.m.TokenRefresh.WithLabelValues(testNS, comp, KindAuthorizerToken, metrics.ResultError)); n != 0 {
		t.Errorf("authorizer refresh errors = %v; want 0", n)
	}
	rt, active := e.sim.RefreshToken(comp, az)
	if !active {
		t.Fatal("the authorization is no longer active at the simulator")
	}
	waittest.For(t, "the stored refresh token to be the current one", 5*time.Second, func() bool {
		return storedRefreshToken(t, a, comp, az) == rt || func() bool { rt, _ = e.sim.RefreshToken(comp, az); return false }()
	})
	lists := a.pw.list.Load() // the term's sweep lists once

	// Someone else spends the stored refresh token: the broker's next call
	// gets 61023 and recovers the current one from the authorizer list.
	ct, err := a.b.Platform().ComponentToken(testNS, comp)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := wechat.New(wechat.Options{BaseURL: e.sim.URL})
	if _, err := client.AuthorizerToken(t.Context(), ct.AccessToken, comp, az, storedRefreshToken(t, a, comp, az)); err != nil {
		t.Fatalf("the outside refresh failed: %v", err)
	}
	before := okRefreshes()
	waittest.For(t, "a refresh after the recovery", 10*ttl, func() bool { return okRefreshes() >= before+2 })
	if a.pw.list.Load() == lists {
		t.Error("no api_get_authorizer_list call: the 61023 was not recovered from the list")
	}
	list, _ := a.b.Platform().Authorizers(t.Context(), testNS, comp)
	if len(list) != 1 || list[0].State != StateActive || list[0].Source != SourceRecovered {
		t.Errorf("Authorizers = %+v; want one active, recovered", list)
	}
	rt, _ = e.sim.RefreshToken(comp, az)
	waittest.For(t, "the stored refresh token to be the current one", 5*time.Second, func() bool {
		cur, _ := e.sim.RefreshToken(comp, az)
		return storedRefreshToken(t, a, comp, az) == cur
	})
	noPlaintext(t, a.rdb, cfg.Redis.KeyPrefix, rt)
	noSecrets(t, a, rt, secretOf(comp))
}

// TestPlatformLostAuthorizations: an authorizer whose refresh token WeChat
// refuses with 61023 and that api_get_authorizer_list no longer lists
// (revoked, the unauthorized push lost) becomes needs_reauthorization: its
// retries stop, reads answer ErrNeedsReauthorization, the state gauge shows
// it; an unauthorized event makes another one revoked at once. A new
// authorization brings the first back.
func TestPlatformLostAuthorizations(t *testing.T) {
	comp, lost, gone := compID(1), authID(1), authID(2)
	cfg := platformConfig(t, comp)
	const ttl = 2 * time.Second
	e := newEnv(t, wechattest.Options{TokenTTL: ttl}, cfg)
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(a.b.Platform(), comp)
	e.authorize(a.b.Platform(), comp, lost)
	e.authorize(a.b.Platform(), comp, gone)
	azToken(t, b, comp, lost)
	azToken(t, b, comp, gone)

	// Revoked at WeChat, the push lost: the next refresh meets 61023.
	if err := e.sim.Revoke(t.Context(), comp, lost); err != nil {
		t.Fatal(err)
	}
	// Revoked with the push delivered.
	if err := e.sim.Revoke(t.Context(), comp, gone); err != nil {
		t.Fatal(err)
	}
	handle(t, b.b.Platform(), comp, msgcrypt.Event{InfoType: msgcrypt.InfoUnauthorized, AuthorizerAppID: gone})
	waittest.For(t, "the revoked authorizer to stop being served", 5*time.Second, func() bool {
		_, err := b.b.Platform().AuthorizerToken(testNS, comp, gone)
		return errors.Is(err, ErrRevoked)
	})
	waittest.For(t, "the 61023 authorizer to need re-authorization", 10*ttl, func() bool {
		_, err := b.b.Platform().AuthorizerToken(testNS, comp, lost)
		return errors.Is(err, ErrNeedsReauthorization)
	})
	for _, n := range []*node{a, b} {
		waittest.For(t, "the state gauges", 5*time.Second, func() bool {
			return azGauge(n, comp, metrics.AuthorizerActive) == 0 && azGauge(n, comp, metrics.AuthorizerRevoked) == 1 &&
				azGauge(n, comp, metrics.AuthorizerNeedsReauthorization) == 1
		})
	}
	if n := testutil.ToFloat64(a.m.WeChatErrors.WithLabelValues(testNS, comp, wechat.APIAuthorizerToken, "61023")); n < 1 {
		t.Errorf("wechat_errors_total{appid=component, api=api_authorizer_token, errcode=61023} = %v; want >= 1", n)
	}
	list, _ := b.b.Platform().Authorizers(t.Context(), testNS, comp)
	if len(list) != 2 || list[0].State != StateNeedsReauthorization || !strings.Contains(list[0].LastError, "61023") || list[1].State != StateRevoked {
		t.Errorf("Authorizers = %+v", list)
	}
	// Retries stopped: neither is scheduled any more, and no call follows
	// while the component token is refreshed twice more.
	calls := a.pw.authorizer.Load()
	waittest.For(t, "the leader's schedule to drop both", 5*time.Second, func() bool {
		tm := a.b.el.term.Load()
		if tm == nil {
			return false
		}
		s := tm.sched()
		s.mu.Lock()
		defer s.mu.Unlock()
		for it := range s.tasks {
			if it.kind == KindAuthorizerToken {
				return false
			}
		}
		return true
	})
	comps := a.pw.component.Load()
	waittest.For(t, "two component refreshes", 10*ttl, func() bool { return a.pw.component.Load() >= comps+2 })
	if got := a.pw.authorizer.Load(); got != calls {
		t.Errorf("api_authorizer_token calls went from %d to %d after the refresh stopped", calls, got)
	}
	if n := testutil.ToFloat64(a.m.OpenPlatform.Overdue.WithLabelValues(testNS, comp)); n != 0 {
		t.Errorf("overdue = %v; authorizers that are not active are not overdue", n)
	}

	// The merchant authorizes again.
	e.authorize(b.b.Platform(), comp, lost)
	tok := azToken(t, b, comp, lost)
	if !e.sim.TokenValid(lost, tok.AccessToken) {
		t.Error("the token after re-authorization is not valid at the simulator")
	}
	waittest.For(t, "the gauges after re-authorization", 5*time.Second, func() bool {
		return azGauge(b, comp, metrics.AuthorizerActive) == 1 && azGauge(b, comp, metrics.AuthorizerNeedsReauthorization) == 0
	})
}

// TestPlatformImportExport: imported refresh tokens become active
// authorizers whose tokens the leader fetches at once; a second import of
// the same entries changes nothing; bad entries are rejected with the
// reason; Export gives the current refresh tokens back.
func TestPlatformImportExport(t *testing.T) {
	comp := compID(1)
	cfg := platformConfig(t, comp)
	e := newEnv(t, wechattest.Options{}, cfg)
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(a.b.Platform(), comp)
	var in []RefreshTokenEntry
	for i := 1; i <= 3; i++ {
		if _, err := e.sim.Authorize(t.Context(), comp, authID(i)); err != nil { // the event went to the old system
			t.Fatal(err)
		}
		rt, _ := e.sim.RefreshToken(comp, authID(i))
		in = append(in, RefreshTokenEntry{AuthorizerAppID: authID(i), RefreshToken: rt})
	}
	bad := []RefreshTokenEntry{{"wxNOTHEX", "x"}, {authID(8), ""}, {authID(9), "a\tb"}, in[0]}
	res, err := b.b.Platform().Import(t.Context(), testNS, comp, append(append([]RefreshTokenEntry{}, in...), bad...))
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 3 || res.Unchanged != 0 || len(res.Rejected) != 4 {
		t.Fatalf("Import = %+v; want 3 imported, 4 rejected", res)
	}
	for _, p := range res.Rejected {
		for _, e := range in {
			if strings.Contains(p.Problem, e.RefreshToken) {
				t.Errorf("a rejection quotes a refresh token: %q", p.Problem)
			}
		}
	}
	for _, e := range in {
		azToken(t, a, comp, e.AuthorizerAppID)
		azToken(t, b, comp, e.AuthorizerAppID)
	}
	res, err = a.b.Platform().Import(t.Context(), testNS, comp, in)
	if err != nil || res.Imported != 0 || res.Unchanged != 3 {
		t.Errorf("second Import = %+v, %v; want 3 unchanged", res, err)
	}
	list, _ := a.b.Platform().Authorizers(t.Context(), testNS, comp)
	if len(list) != 3 || list[0].Source != SourceImport || list[0].State != StateActive {
		t.Errorf("Authorizers = %+v", list)
	}
	out, err := b.b.Platform().Export(t.Context(), testNS, comp)
	if err != nil || len(out) != 3 {
		t.Fatalf("Export = %d entries, %v", len(out), err)
	}
	for i, e := range out {
		if e != in[i] {
			t.Errorf("Export[%d] = %s; want %s with its current refresh token", i, e.AuthorizerAppID, in[i].AuthorizerAppID)
		}
	}
	var secrets []string
	for _, e := range in {
		secrets = append(secrets, e.RefreshToken)
	}
	noPlaintext(t, a.rdb, cfg.Redis.KeyPrefix, secrets...)
	noSecrets(t, a, secrets...)
	noSecrets(t, b, secrets...)
	if _, err := a.b.Platform().Import(t.Context(), testNS, compID(5), in); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("Import(unknown component) = %v", err)
	}
}

// TestPlatformLeaderDiesBeforeWrite: the leader dies between WeChat's
// answer (a new access token and, rotated, a new refresh token: the stored
// one is dead) and its fenced write. The next leader finds the call's
// intent, recovers the current refresh token from api_get_authorizer_list
// and carries on: nothing is lost, no re-authorization is needed.
func TestPlatformLeaderDiesBeforeWrite(t *testing.T) {
	comp, az := compID(1), authID(1)
	cfg := platformConfig(t, comp)
	cfg.Leader = config.Leader{LockTTL: 2 * time.Second, RenewInterval: 300 * time.Millisecond}
	const ttl = 3 * time.Second
	e := newEnv(t, wechattest.Options{TokenTTL: ttl}, cfg)
	e.addComponents(true)

	part := &partition{}
	var armed atomic.Bool
	paused := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(resume) }) })
	a := e.start("a", func(n *node, _ *redis.Options) {
		n.hook = part
		n.setup = func(b *Broker) {
			b.hooks.beforeWrite = func(it *item) {
				if it.kind == KindAuthorizerToken && armed.CompareAndSwap(true, false) {
					close(paused)
					<-resume
				}
			}
		}
	})
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(a.b.Platform(), comp)
	e.authorize(a.b.Platform(), comp, az)
	first := azToken(t, b, comp, az)
	stored := storedRefreshToken(t, a, comp, az)

	armed.Store(true)
	select {
	case <-paused:
	case <-time.After(5 * ttl):
		t.Fatal("the leader never reached the authorizer's write")
	}
	// WeChat answered and rotated: the stored refresh token is dead.
	part.on.Store(true)
	if cur, _ := e.sim.RefreshToken(comp, az); cur == stored {
		t.Fatal("the simulator did not rotate the refresh token")
	}
	waittest.For(t, "the partitioned leader to step down", 5*time.Second, func() bool { return !a.b.IsLeader() })
	leader(t, cfg.Leader.LockTTL+5*time.Second, a, b)
	if !b.b.IsLeader() {
		t.Fatal("b did not take over")
	}
	var next Token
	waittest.For(t, "the new leader to refresh the authorizer", 5*ttl, func() bool {
		var err error
		next, err = b.b.Platform().AuthorizerToken(testNS, comp, az)
		return err == nil && next.AccessToken != first.AccessToken
	})
	if !e.sim.TokenValid(az, next.AccessToken) {
		t.Error("the new leader's authorizer token is not valid at the simulator")
	}
	if b.pw.list.Load() == 0 {
		t.Error("the new leader did not recover the refresh token from api_get_authorizer_list")
	}
	waittest.For(t, "the stored refresh token to be the simulator's current one", 5*time.Second, func() bool {
		cur, _ := e.sim.RefreshToken(comp, az)
		return storedRefreshToken(t, b, comp, az) == cur
	})
	list, _ := b.b.Platform().Authorizers(t.Context(), testNS, comp)
	if len(list) != 1 || list[0].State != StateActive {
		t.Errorf("Authorizers = %+v; want one active", list)
	}
	if n := testutil.ToFloat64(b.m.TokenRefresh.WithLabelValues(testNS, comp, KindAuthorizerToken, metrics.ResultError)); n != 0 {
		t.Errorf("the new leader's authorizer refresh errors = %v; want 0 (recovered before calling)", n)
	}
	// The old leader wakes up: its write is fenced out.
	part.on.Store(false)
	once.Do(func() { close(resume) })
	waittest.For(t, "the fenced write of the old leader", 5*time.Second, func() bool {
		return testutil.ToFloat64(a.m.FencedWritesRejected) >= 1
	})
	cur, _ := e.sim.RefreshToken(comp, az)
	if got := storedRefreshToken(t, b, comp, az); got != cur {
		t.Error("the old leader's write replaced the current refresh token")
	}
}

// withComponents is a copy of cfg configuring components comps (and no
// apps) in the test namespace.
func withComponents(cfg *config.Config, comps ...string) *config.Config {
	next := *cfg
	ns := &config.Namespace{}
	for _, c := range comps {
		ns.Components = append(ns.Components, &config.Component{AppID: c, Secret: config.Secret(secretOf(c)),
			Token: "msgtoken", EncodingAESKey: testAESKey})
	}
	next.Namespaces = map[string]*config.Namespace{testNS: ns}
	return &next
}

// TestPlatformReload: a reload that adds a component makes every replica
// serve it (ticket, component token); one that removes a component stops
// serving it and its authorizers and deletes its series; adding it back
// brings its authorizers back from Redis.
func TestPlatformReload(t *testing.T) {
	c1, c2, az := compID(1), compID(2), authID(1)
	cfg := platformConfig(t, c1)
	e := newEnv(t, wechattest.Options{}, cfg)
	e.cfg = withComponents(cfg, c1, c2)
	e.addComponents(false)
	e.cfg = cfg
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(a.b.Platform(), c1)
	e.authorize(a.b.Platform(), c1, az)
	azToken(t, b, c1, az)

	reloadAll(t, withComponents(cfg, c2), a, b)
	for _, n := range []*node{a, b} {
		if _, err := n.b.Platform().AuthorizerToken(testNS, c1, az); !errors.Is(err, ErrUnknownComponent) {
			t.Errorf("AuthorizerToken of a removed component = %v; want ErrUnknownComponent", err)
		}
		if got := n.b.Platform().ComponentsOf(testNS); len(got) != 1 || got[0] != c2 {
			t.Errorf("ComponentsOf = %v; want [%s]", got, c2)
		}
		if n := testutil.CollectAndCount(n.m.OpenPlatform.Authorizers); n != 3 {
			t.Errorf("authorizer state series after the reload = %d; want 3 (the new component's)", n)
		}
	}
	e.pushTicket(b.b.Platform(), c2)
	waittest.For(t, "the added component's token on the follower", 10*time.Second, func() bool {
		_, err := b.b.Platform().ComponentToken(testNS, c2)
		return err == nil
	})

	reloadAll(t, withComponents(cfg, c1, c2), a, b)
	azToken(t, b, c1, az)
	waittest.For(t, "the re-added component's gauges", 5*time.Second, func() bool {
		return azGauge(b, c1, metrics.AuthorizerActive) == 1
	})
}

// TestPlatformRecoversLostRegistry: Redis lost the authorizers (their
// registry entries and records, refresh tokens included). The next leader
// compares api_get_authorizer_list with the registry at its term's start
// and recovers every listed authorizer with its current refresh token; it
// warns that Redis keeps no persistence.
func TestPlatformRecoversLostRegistry(t *testing.T) {
	comp := compID(1)
	cfg := platformConfig(t, comp)
	e := newEnv(t, wechattest.Options{}, cfg)
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	e.pushTicket(a.b.Platform(), comp)
	for i := 1; i <= 3; i++ {
		e.authorize(a.b.Platform(), comp, authID(i))
	}
	for i := 1; i <= 3; i++ {
		azToken(t, a, comp, authID(i))
	}
	a.stop()

	ctx := t.Context()
	rdb := e.redis.Client(t)
	keys := a.b.store.keys
	if err := rdb.Del(ctx, keys.opAuth(testNS, comp)).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := rdb.HDel(ctx, keys.tok(testNS), comp+"/"+authID(i)+"/"+KindAuthorizerToken).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Like a Redis that restarted without persistence (redistest runs
	// with none, which the leader warns about).
	c := e.start("c")
	leader(t, 10*time.Second, c)
	for i := 1; i <= 3; i++ {
		tok := azToken(t, c, comp, authID(i))
		if !e.sim.TokenValid(authID(i), tok.AccessToken) {
			t.Errorf("recovered authorizer %d: token not valid at the simulator", i)
		}
	}
	list, _ := c.b.Platform().Authorizers(ctx, testNS, comp)
	if len(list) != 3 || list[0].Source != SourceRecovered || list[0].State != StateActive {
		t.Errorf("Authorizers = %+v; want 3 active, recovered", list)
	}
	persist := rdb.ConfigGet(ctx, "appendonly").Val()["appendonly"] == "yes" || rdb.ConfigGet(ctx, "save").Val()["save"] != ""
	if !persist && c.logs.FilterMessageSnippet("redis keeps no persistence").Len() == 0 {
		t.Error("no warning that redis keeps no persistence")
	}
	if c.logs.FilterMessageSnippet("recovered from api_get_authorizer_list").Len() == 0 {
		t.Error("no log line about the recovered authorizers")
	}
}

// TestPlatformReportsPreAuthAndReplays: a reported authorizer or component
// token is refreshed once however many replicas report it (conditional
// refresh, as for apps); PreAuthURL links to the authorization page with a
// fresh pre_auth_code; FirstSeen is one replay store for every replica.
func TestPlatformReportsPreAuthAndReplays(t *testing.T) {
	comp, az := compID(1), authID(1)
	cfg := platformConfig(t, comp)
	e := newEnv(t, wechattest.Options{}, cfg)
	cfg.WeChat.BaseURL = e.sim.URL // the simulator serves the authorization page
	e.addComponents(false)
	a := e.start("a")
	leader(t, 5*time.Second, a)
	b := e.start("b")
	e.pushTicket(a.b.Platform(), comp)
	e.authorize(a.b.Platform(), comp, az)
	old := azToken(t, b, comp, az)

	calls := a.pw.authorizer.Load()
	var wg sync.WaitGroup
	got := make([]Token, 8)
	errs := make([]error, 8)
	for i := range got {
		n := []*node{a, b}[i%2]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got[i], errs[i] = n.b.Platform().ReportAuthorizer(ctx, testNS, comp, az,
				Report{Token: old.AccessToken, Source: metrics.SourceProxy, Proof: Proven})
		})
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i].AccessToken == old.AccessToken {
			t.Fatalf("report %d = %v; want a new token", i, errs[i])
		}
	}
	if n := a.pw.authorizer.Load() - calls; n != 1 {
		t.Errorf("8 reports of one authorizer token made %d api_authorizer_token calls; want 1", n)
	}
	ct, err := b.b.Platform().ComponentToken(testNS, comp)
	if err != nil {
		t.Fatal(err)
	}
	next, err := b.b.Platform().ReportComponent(t.Context(), testNS, comp, Report{Token: ct.AccessToken, Source: metrics.SourceProxy, Proof: Proven})
	if err != nil || next.AccessToken == ct.AccessToken {
		t.Errorf("ReportComponent = %v; want a new component token", err)
	}

	link, err := b.b.Platform().PreAuthURL(t.Context(), testNS, comp, "https://example.com/back?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, e.sim.URL+"/cgi-bin/componentloginpage?component_appid="+comp+"&pre_auth_code=") ||
		!strings.Contains(link, "redirect_uri=https%3A%2F%2Fexample.com%2Fback%3Fx%3D1") {
		t.Errorf("PreAuthURL = %s", link)
	}
	if _, err := b.b.Platform().PreAuthURL(t.Context(), testNS, compID(9), "https://example.com/"); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("PreAuthURL(unknown) = %v", err)
	}

	for i, want := range []bool{true, false} {
		n := []*node{a, b}[i]
		first, err := n.b.Platform().FirstSeen(t.Context(), testNS, comp, "1700000000|12345|sig", time.Minute)
		if err != nil || first != want {
			t.Errorf("FirstSeen on %d = %v, %v; want %v", i, first, err, want)
		}
	}
	if first, _ := a.b.Platform().FirstSeen(t.Context(), testNS, comp, "other", time.Minute); !first {
		t.Error("FirstSeen(another key) = false")
	}
}
