package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestIssuedTokenApp: every replica names the app of every token any replica
// handed out until the token's own expiry, superseded or not; a replica that
// never saw a token finds it in Redis once, then in memory; unknown tokens
// cost Redis one lookup; known tokens keep working while Redis is down.
func TestIssuedTokenApp(t *testing.T) {
	app := classicApp(1)
	cfg := testConfig(t, app)
	e := newEnv(t, wechattest.Options{}, cfg)
	a, b := e.start("a"), e.start("b")
	leader(t, 5*time.Second, a, b)
	first := token(t, a, app.AppID).AccessToken
	second, err := a.b.Invalidate(context.Background(), testNS, app.AppID, first, metrics.SourceClient)
	if err != nil || second.AccessToken == first {
		t.Fatalf("Invalidate = %v, %v", second, err)
	}
	ctx := context.Background()
	for _, n := range []*node{a, b} {
		waitFor(t, 5*time.Second, "the new token on "+n.b.id, func() bool { return token(t, n, app.AppID) == second })
		for _, tok := range []string{first, second.AccessToken} {
			ns, appid, ok, err := n.b.IssuedTokenApp(ctx, tok)
			if err != nil || !ok || ns != testNS || appid != app.AppID {
				t.Errorf("%s: IssuedTokenApp(a handed-out token) = %q %q %v %v", n.b.id, ns, appid, ok, err)
			}
		}
	}

	hook := &countingHook{}
	late := e.start("late", func(n *node, _ *redis.Options) { n.hook = hook })
	waitFor(t, 5*time.Second, "the late replica's cache", func() bool { _, err := late.b.AccessToken(testNS, app.AppID); return err == nil })
	if _, _, ok, err := late.b.IssuedTokenApp(ctx, first); !ok || err != nil {
		t.Fatalf("late replica: IssuedTokenApp(superseded token) = %v, %v; want it found in Redis", ok, err)
	}
	before := hook.n.Load()
	for range 10 {
		if _, _, ok, _ := late.b.IssuedTokenApp(ctx, first); !ok {
			t.Fatal("late replica forgot the token")
		}
		if _, _, ok, _ := late.b.IssuedTokenApp(ctx, "90_NEVER_HANDED_OUT_AAAAAAAAAAAAAAAAAAAAAA"); ok {
			t.Fatal("an unknown token was accepted")
		}
	}
	// The first unknown lookup asks Redis (one GET per namespace); every
	// other lookup is answered from memory. Background reconciles and pings
	// may add a few commands; a Redis call per lookup would add 20.
	if got := hook.n.Load() - before; got > 8 {
		t.Errorf("20 lookups sent %d Redis commands; want the known and the remembered-unknown token answered from memory", got)
	}

	e.redis.Stop()
	if _, _, ok, err := b.b.IssuedTokenApp(ctx, first); !ok || err != nil {
		t.Errorf("Redis down: IssuedTokenApp(known token) = %v, %v; want it answered from memory", ok, err)
	}
	if _, _, _, err := b.b.IssuedTokenApp(ctx, "90_ANOTHER_UNKNOWN_TOKEN_BBBBBBBBBBBBBBBBBB"); !errors.Is(err, ErrTokenLookup) {
		t.Errorf("Redis down: IssuedTokenApp(unknown token) error = %v; want ErrTokenLookup", err)
	}
}
