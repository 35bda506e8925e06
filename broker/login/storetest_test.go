package login

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/internal/redistest"
)

// The login store conformance suite runs the same checks against every Redis
// login supports: a real redis-server, and miniredis (dev mode), as the
// broker's store suite does (broker/storetest_test.go).

const suitePrefix = "suite"

func TestLoginStoreRedisServer(t *testing.T) {
	runLoginStoreSuite(t, func(t *testing.T) (*store, *redis.Client) {
		rdb := redistest.Start(t).Client(t)
		return newStore(rdb, suitePrefix), rdb
	})
}

func TestLoginStoreMiniredis(t *testing.T) {
	runLoginStoreSuite(t, func(t *testing.T) (*store, *redis.Client) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		return newStore(rdb, suitePrefix), rdb
	})
}

// suiteTTL returns the remaining life of key, failing when it has none.
func suiteTTL(t *testing.T, rdb *redis.Client, key string) time.Duration {
	t.Helper()
	d, err := rdb.PTTL(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	if d <= 0 {
		t.Fatalf("PTTL %s = %v; want a positive TTL", key, d)
	}
	return d
}

// suiteFamily stores a family whose credentials are fresh random tokens.
func suiteFamily(t *testing.T, s *store, now time.Time) newFamily {
	t.Helper()
	f := newFamily{fid: randomToken(16), uid: "7", sub: "u_pub", flow: "miniprogram",
		refreshToken: randomToken(32), jti: randomToken(16), exp: now.Add(time.Hour), ttl: time.Hour}
	if err := s.createFamily(t.Context(), f); err != nil {
		t.Fatalf("createFamily: %v", err)
	}
	return f
}

// suiteRotation rotates f's current refresh token (cur) at now.
func suiteRotation(f newFamily, kind, cur string, now time.Time, grace time.Duration) rotateArgs {
	return rotateArgs{fid: f.fid, kind: kind, value: cur, now: now, grace: grace,
		refreshToken: randomToken(32), jti: randomToken(16), next: "sealed-pair-" + randomToken(8),
		exp: now.Add(time.Hour), ttl: time.Hour}
}

func runLoginStoreSuite(t *testing.T, newStore func(t *testing.T) (*store, *redis.Client)) {
	t.Run("users resolve by openid, then unionid, else are created once", func(t *testing.T) {
		s, _ := newStore(t)
		ctx := t.Context()
		uid, created, err := s.resolveUser(ctx, "wxa", "open-a", "union-1")
		if err != nil || !created || uid == "" {
			t.Fatalf("first resolve = %q, created %v, %v; want a new user", uid, created, err)
		}
		again, created, err := s.resolveUser(ctx, "wxa", "open-a", "union-1")
		if err != nil || created || again != uid {
			t.Errorf("same openid again = %q, created %v, %v; want %q, not created", again, created, err, uid)
		}
		// Another app's openid with the same unionid is the same person.
		linked, created, err := s.resolveUser(ctx, "wxb", "open-b", "union-1")
		if err != nil || created || linked != uid {
			t.Errorf("other app, same unionid = %q, created %v, %v; want %q, not created", linked, created, err, uid)
		}
		// No unionid: a new user, and the empty unionid links nobody.
		other, created, err := s.resolveUser(ctx, "wxb", "open-c", "")
		if err != nil || !created || other == uid {
			t.Errorf("no unionid = %q, created %v, %v; want a new user", other, created, err)
		}
		third, created, err := s.resolveUser(ctx, "wxb", "open-d", "")
		if err != nil || !created || third == other || third == uid {
			t.Errorf("second user without unionid = %q, created %v, %v; want a third user", third, created, err)
		}
		// First binding of a unionid wins: another user's openid presenting
		// union-1 stays that user's and does not move the unionid.
		if id, _, err := s.resolveUser(ctx, "wxb", "open-c", "union-1"); err != nil || id != other {
			t.Errorf("known openid with a bound unionid = %q, %v; want its own user %q", id, err, other)
		}
		if id, _, _ := s.resolveUser(ctx, "wxd", "open-e", "union-1"); id != uid {
			t.Errorf("unionid now names %q; want the first user %q", id, uid)
		}
	})

	t.Run("concurrent first logins make one user", func(t *testing.T) {
		s, _ := newStore(t)
		const n = 8
		var wg sync.WaitGroup
		ids := make([]string, n)
		news := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], news[i], errs[i] = s.resolveUser(t.Context(), "wxa", "open-race", "union-race")
			}()
		}
		wg.Wait()
		created := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("resolve %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Errorf("resolve %d = %q; want %q like the others", i, ids[i], ids[0])
			}
			if news[i] {
				created++
			}
		}
		if created != 1 {
			t.Errorf("%d resolves reported a new user; want exactly 1", created)
		}
	})

	t.Run("user records keep created_at and the first public id", func(t *testing.T) {
		s, _ := newStore(t)
		ctx := t.Context()
		if _, ok, err := s.user(ctx, "404"); err != nil || ok {
			t.Errorf("user(unknown) = ok %v, %v; want not found", ok, err)
		}
		uid, _, err := s.resolveUser(ctx, "wxa", "open-a", "")
		if err != nil {
			t.Fatal(err)
		}
		first, err := s.writeUser(ctx, uid, 1000, "u_first", "nickname", "Ann", "openid:wxa", "open-a")
		if err != nil {
			t.Fatalf("writeUser: %v", err)
		}
		want := map[string]string{"id": uid, "created_at": "1000", "updated_at": "1000", "last_login_at": "1000",
			fieldPublicID: "u_first", "nickname": "Ann", "openid:wxa": "open-a"}
		for k, v := range want {
			if first[k] != v {
				t.Errorf("after first write %s = %q; want %q", k, first[k], v)
			}
		}
		second, err := s.writeUser(ctx, uid, 2000, "u_second", "avatar", "https://a.example/x.png")
		if err != nil {
			t.Fatalf("writeUser again: %v", err)
		}
		if second["created_at"] != "1000" || second[fieldPublicID] != "u_first" {
			t.Errorf("second write changed created_at %q / public_id %q; want 1000 / u_first",
				second["created_at"], second[fieldPublicID])
		}
		if second["last_login_at"] != "2000" || second["nickname"] != "Ann" || second["avatar"] == "" {
			t.Errorf("second write = %v; want last_login_at 2000, nickname kept, avatar set", second)
		}
		if err := s.setUserField(ctx, uid, fieldPhone, "sealed-phone", 3000); err != nil {
			t.Fatalf("setUserField: %v", err)
		}
		got, ok, err := s.user(ctx, uid)
		if err != nil || !ok {
			t.Fatalf("user = ok %v, %v", ok, err)
		}
		if got[fieldPhone] != "sealed-phone" || got["updated_at"] != "3000" || got["last_login_at"] != "2000" {
			t.Errorf("after setUserField: %v", got)
		}
	})

	t.Run("a user without a public id gets the first one offered", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		if err := rdb.HSet(ctx, s.keys.user("41"), "id", "41").Err(); err != nil {
			t.Fatal(err)
		}
		id, err := s.assignPublicID(ctx, "41", "u_one")
		if err != nil || id != "u_one" {
			t.Fatalf("assignPublicID = %q, %v; want u_one", id, err)
		}
		if id, err := s.assignPublicID(ctx, "41", "u_two"); err != nil || id != "u_one" {
			t.Errorf("second assignPublicID = %q, %v; want the first, u_one", id, err)
		}
	})

	t.Run("families are found by refresh token and expire", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		f := suiteFamily(t, s, time.Now())
		fid, ok, err := s.familyOf(ctx, f.refreshToken)
		if err != nil || !ok || fid != f.fid {
			t.Errorf("familyOf = %q, %v, %v; want %q", fid, ok, err, f.fid)
		}
		if _, ok, err := s.familyOf(ctx, "not-a-token"); err != nil || ok {
			t.Errorf("familyOf(unknown) = ok %v, %v; want not found", ok, err)
		}
		uid, sub, err := s.familyUser(ctx, f.fid)
		if err != nil || uid != f.uid || sub != f.sub {
			t.Errorf("familyUser = %q, %q, %v; want %q, %q", uid, sub, err, f.uid, f.sub)
		}
		if uid, _, err := s.familyUser(ctx, "gone"); err != nil || uid != "" {
			t.Errorf("familyUser(unknown) = %q, %v; want \"\"", uid, err)
		}
		for _, k := range []string{s.keys.family(f.fid), s.keys.refresh(digest(f.refreshToken))} {
			if d := suiteTTL(t, rdb, k); d > time.Hour {
				t.Errorf("TTL of %s = %v; want at most the family's hour", k, d)
			}
		}
		if uid, live, err := s.accessLive(ctx, f.jti, f.fid); err != nil || !live || uid != f.uid {
			t.Errorf("accessLive = %q, %v, %v; want %q, live", uid, live, err, f.uid)
		}
	})

	t.Run("rotation: current rotates, previous replays within grace, else the family is revoked", func(t *testing.T) {
		s, _ := newStore(t)
		ctx := t.Context()
		now := time.Now()
		f := suiteFamily(t, s, now)
		r1 := suiteRotation(f, credRefresh, f.refreshToken, now, 10*time.Second)
		if out, _, err := s.rotateFamily(ctx, r1); err != nil || out != rotRotated {
			t.Fatalf("rotate current = %q, %v; want %q", out, err, rotRotated)
		}
		if fid, ok, _ := s.familyOf(ctx, r1.refreshToken); !ok || fid != f.fid {
			t.Errorf("the new refresh token names %q (ok %v); want %q", fid, ok, f.fid)
		}
		// The previous token again within grace: the pair its first use got.
		retry := suiteRotation(f, credRefresh, f.refreshToken, now.Add(5*time.Second), 10*time.Second)
		out, next, err := s.rotateFamily(ctx, retry)
		if err != nil || out != rotReplay || next != r1.next {
			t.Errorf("previous within grace = %q, %q, %v; want %q with %q", out, next, err, rotReplay, r1.next)
		}
		// The jti of the current pair rotates too.
		r2 := suiteRotation(f, credJTI, r1.jti, now.Add(6*time.Second), 10*time.Second)
		if out, _, err := s.rotateFamily(ctx, r2); err != nil || out != rotRotated {
			t.Fatalf("rotate by current jti = %q, %v; want %q", out, err, rotRotated)
		}
		// The first token, now two rotations old: reuse, and the family is revoked.
		stale := suiteRotation(f, credRefresh, f.refreshToken, now.Add(7*time.Second), 10*time.Second)
		if out, _, err := s.rotateFamily(ctx, stale); err != nil || out != rotReuse {
			t.Errorf("rotated token reused = %q, %v; want %q", out, err, rotReuse)
		}
		cur := suiteRotation(f, credRefresh, r2.refreshToken, now.Add(8*time.Second), 10*time.Second)
		if out, _, err := s.rotateFamily(ctx, cur); err != nil || out != rotRevoked {
			t.Errorf("current token after reuse = %q, %v; want %q", out, err, rotRevoked)
		}
		if _, live, err := s.accessLive(ctx, r2.jti, f.fid); err != nil || live {
			t.Errorf("accessLive after reuse = %v, %v; want revoked", live, err)
		}
	})

	t.Run("rotation: previous after grace is reuse; expired and missing families", func(t *testing.T) {
		s, _ := newStore(t)
		ctx := t.Context()
		now := time.Now()
		f := suiteFamily(t, s, now)
		if out, _, err := s.rotateFamily(ctx, suiteRotation(f, credRefresh, f.refreshToken, now, time.Second)); err != nil || out != rotRotated {
			t.Fatalf("rotate = %q, %v", out, err)
		}
		late := suiteRotation(f, credRefresh, f.refreshToken, now.Add(2*time.Second), time.Second)
		if out, _, err := s.rotateFamily(ctx, late); err != nil || out != rotReuse {
			t.Errorf("previous after grace = %q, %v; want %q", out, err, rotReuse)
		}

		g := suiteFamily(t, s, now)
		expired := suiteRotation(g, credRefresh, g.refreshToken, g.exp, time.Second)
		if out, _, err := s.rotateFamily(ctx, expired); err != nil || out != rotExpired {
			t.Errorf("rotate at exp = %q, %v; want %q", out, err, rotExpired)
		}
		missing := suiteRotation(newFamily{fid: "nope"}, credRefresh, "x", now, time.Second)
		if out, _, err := s.rotateFamily(ctx, missing); err != nil || out != rotMissing {
			t.Errorf("rotate of an unknown family = %q, %v; want %q", out, err, rotMissing)
		}
	})

	t.Run("revocation ends the family and denylists the access token", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		now := time.Now()
		f := suiteFamily(t, s, now)
		g := suiteFamily(t, s, now)
		if err := s.revoke(ctx, "", g.jti, 30*time.Second); err != nil {
			t.Fatalf("revoke jti only: %v", err)
		}
		if _, live, _ := s.accessLive(ctx, g.jti, g.fid); live {
			t.Error("a denylisted jti is still live")
		}
		if d := suiteTTL(t, rdb, s.keys.deny(g.jti)); d > 30*time.Second {
			t.Errorf("denylist TTL %v; want at most 30s", d)
		}
		if err := s.revoke(ctx, f.fid, "", 0); err != nil {
			t.Fatalf("revoke family: %v", err)
		}
		if _, live, _ := s.accessLive(ctx, f.jti, f.fid); live {
			t.Error("a revoked family's access token is still live")
		}
		if out, _, err := s.rotateFamily(ctx, suiteRotation(f, credRefresh, f.refreshToken, now, time.Second)); err != nil || out != rotRevoked {
			t.Errorf("rotate after revoke = %q, %v; want %q", out, err, rotRevoked)
		}
		// Revoking a family that is gone does not re-create it.
		if err := s.revoke(ctx, "gone", "", 0); err != nil {
			t.Fatal(err)
		}
		if n, err := rdb.Exists(ctx, s.keys.family("gone")).Result(); err != nil || n != 0 {
			t.Errorf("revoke re-created a gone family (exists %d, %v)", n, err)
		}
		if _, live, err := s.accessLive(ctx, "jti", "gone"); err != nil || live {
			t.Errorf("accessLive of a gone family = %v, %v; want not live", live, err)
		}
	})

	t.Run("oauth states are single use", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		id := randomToken(16)
		if first, err := s.markStateUsed(ctx, id, time.Minute); err != nil || !first {
			t.Fatalf("markStateUsed = %v, %v; want first", first, err)
		}
		if first, err := s.markStateUsed(ctx, id, time.Minute); err != nil || first {
			t.Errorf("markStateUsed again = %v, %v; want already used", first, err)
		}
		if d := suiteTTL(t, rdb, s.keys.stateUsed(digest(id))); d > time.Minute {
			t.Errorf("used marker TTL %v; want at most a minute", d)
		}
		// A state stored before states were sealed is taken once.
		old := randomToken(16)
		if err := rdb.Set(ctx, s.keys.state(digest(old)), `{"return_to":"/x"}`, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if raw, ok, err := s.takeStoredState(ctx, old); err != nil || !ok || raw != `{"return_to":"/x"}` {
			t.Errorf("takeStoredState = %q, %v, %v", raw, ok, err)
		}
		if _, ok, err := s.takeStoredState(ctx, old); err != nil || ok {
			t.Errorf("takeStoredState again = ok %v, %v; want gone", ok, err)
		}
	})

	t.Run("web sessions start, are read and end", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		sid := randomToken(32)
		if err := s.startSession(ctx, sid, "9", time.Hour); err != nil {
			t.Fatalf("startSession: %v", err)
		}
		if uid, ok, err := s.sessionUser(ctx, sid); err != nil || !ok || uid != "9" {
			t.Errorf("sessionUser = %q, %v, %v; want 9", uid, ok, err)
		}
		if d := suiteTTL(t, rdb, s.keys.session(digest(sid))); d > time.Hour {
			t.Errorf("session TTL %v; want at most an hour", d)
		}
		if err := s.endSession(ctx, sid); err != nil {
			t.Fatalf("endSession: %v", err)
		}
		if _, ok, err := s.sessionUser(ctx, sid); err != nil || ok {
			t.Errorf("sessionUser after end = ok %v, %v; want gone", ok, err)
		}
		if err := s.endSession(ctx, sid); err != nil {
			t.Errorf("ending an ended session: %v", err)
		}
	})

	t.Run("bearer secrets never reach Redis and every key is in the login hash slot", func(t *testing.T) {
		s, rdb := newStore(t)
		ctx := t.Context()
		now := time.Now()
		f := suiteFamily(t, s, now)
		r := suiteRotation(f, credRefresh, f.refreshToken, now, time.Second)
		if _, _, err := s.rotateFamily(ctx, r); err != nil {
			t.Fatal(err)
		}
		sid, state := randomToken(32), randomToken(16)
		if err := s.startSession(ctx, sid, "9", time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.markStateUsed(ctx, state, time.Minute); err != nil {
			t.Fatal(err)
		}
		uid, _, err := s.resolveUser(ctx, "wxa", "open-a", "union-a")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.writeUser(ctx, uid, 1, "u_x"); err != nil {
			t.Fatal(err)
		}
		secrets := []string{f.refreshToken, r.refreshToken, sid, state}
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			t.Fatal("no keys written")
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "{"+suitePrefix+"}:login:") {
				t.Errorf("key %q is outside {%s}:login:", k, suitePrefix)
			}
			var vals []string
			switch rdb.Type(ctx, k).Val() {
			case "string":
				vals = []string{rdb.Get(ctx, k).Val()}
			case "hash":
				for f, v := range rdb.HGetAll(ctx, k).Val() {
					vals = append(vals, f, v)
				}
			}
			for _, sec := range secrets {
				for _, v := range append(vals, k) {
					if strings.Contains(v, sec) {
						t.Errorf("key %q holds a bearer secret in the clear", k)
					}
				}
			}
		}
	})
}
