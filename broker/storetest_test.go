package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// The store conformance suite runs the same checks against every Redis the
// broker supports: a real redis-server, and miniredis (dev mode), so that dev
// mode's "same code paths" is a tested claim rather than a hope.

const suiteOtherNS = "staging"

func TestStoreRedisServer(t *testing.T) {
	runStoreSuite(t, func(t *testing.T) *store {
		rdb := redistest.Start(t).Client(t)
		return newStore(rdb, "suite", []string{testNS, suiteOtherNS}, nil)
	})
}

func TestStoreMiniredis(t *testing.T) {
	runStoreSuite(t, func(t *testing.T) *store {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		return newStore(rdb, "suite", []string{testNS, suiteOtherNS}, nil)
	})
}

// suiteLead takes the lock as instance id (dropping any holder) and a new
// epoch, as campaign does, and returns the fence of that term.
func suiteLead(t *testing.T, s *store, id string) fence {
	t.Helper()
	ctx := t.Context()
	if err := s.rdb.Do(ctx, "DEL", s.keys.lock()).Err(); err != nil {
		t.Fatalf("drop lock: %v", err)
	}
	lock, err := s.obtainLock(ctx, id, time.Minute)
	if err != nil {
		t.Fatalf("obtain lock: %v", err)
	}
	lv := lock.Token() + lock.Metadata()
	epoch, _, err := s.takeEpoch(ctx, lv, 0)
	if err != nil {
		t.Fatalf("take epoch: %v", err)
	}
	return fence{lockValue: lv, epoch: epochString(epoch)}
}

func suiteWrite(value string, now time.Time) recordWrite {
	return recordWrite{ns: testNS, field: "wxapp/" + KindAccessToken, value: value,
		exp: now.Add(time.Hour), at: now, issuedTTL: issuedTTL(now.Add(time.Hour), now)}
}

func storedRecordOf(t *testing.T, s *store, ns, field string) *record {
	t.Helper()
	raw, ok, err := s.record(t.Context(), ns, field)
	if err != nil || !ok {
		t.Fatalf("record(%s, %s) = ok %v, %v", ns, field, ok, err)
	}
	r, err := parseRecord(raw)
	if err != nil {
		t.Fatalf("parse stored record: %v", err)
	}
	return r
}

func runStoreSuite(t *testing.T, newStore func(t *testing.T) *store) {
	t.Run("fenced write accepted", func(t *testing.T) {
		s := newStore(t)
		f := suiteLead(t, s, "a")
		now := time.Now()
		rec, err := s.writeRecord(t.Context(), f, suiteWrite("tok-1", now))
		if err != nil {
			t.Fatalf("writeRecord: %v", err)
		}
		if rec.Gen != 1 || rec.Rev <= 0 {
			t.Errorf("written record gen %d rev %d; want gen 1 and a positive revision", rec.Gen, rec.Rev)
		}
		got := storedRecordOf(t, s, testNS, "wxapp/"+KindAccessToken)
		if *got != *rec {
			t.Errorf("stored %+v; want %+v", got, rec)
		}
		if err := s.writeStatus(t.Context(), f, testNS, "wxapp/"+KindAccessToken, &refreshStatus{LastRefresh: now}); err != nil {
			t.Errorf("writeStatus: %v", err)
		}
	})

	t.Run("fenced writes rejected", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		f := suiteLead(t, s, "a")
		now := time.Now()
		wrongLock := fence{lockValue: "not-the-lock|a", epoch: f.epoch}
		if _, err := s.writeRecord(ctx, wrongLock, suiteWrite("tok-x", now)); !errors.Is(err, errFenced) {
			t.Errorf("writeRecord with a wrong lock value = %v; want errFenced", err)
		}
		// A newer epoch (another leader took over) fences the old term out
		// even though the lock value still matches.
		if _, _, err := s.takeEpoch(ctx, f.lockValue, 0); err != nil {
			t.Fatalf("take newer epoch: %v", err)
		}
		if _, err := s.writeRecord(ctx, f, suiteWrite("tok-old", now)); !errors.Is(err, errFenced) {
			t.Errorf("writeRecord of an older epoch = %v; want errFenced", err)
		}
		if err := s.writeStatus(ctx, f, testNS, "wxapp/"+KindAccessToken, &refreshStatus{}); !errors.Is(err, errFenced) {
			t.Errorf("writeStatus of an older epoch = %v; want errFenced", err)
		}
		if _, err := s.preCall(ctx, f, preCallArgs{ns: testNS, appid: "wxapp", api: "token", day: day(now), mode: callPlain, forceDailyCap: 5}); !errors.Is(err, errFenced) {
			t.Errorf("preCall of an older epoch = %v; want errFenced", err)
		}
		if err := s.clearIntent(ctx, f, testNS, "wxapp"); !errors.Is(err, errFenced) {
			t.Errorf("clearIntent of an older epoch = %v; want errFenced", err)
		}
		if _, ok, err := s.record(ctx, testNS, "wxapp/"+KindAccessToken); ok || err != nil {
			t.Errorf("a rejected write left a record (ok %v, err %v)", ok, err)
		}
	})

	t.Run("generation and revision", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		f := suiteLead(t, s, "a")
		now := time.Now()
		r1, err := s.writeRecord(ctx, f, suiteWrite("tok-1", now))
		if err != nil {
			t.Fatal(err)
		}
		w := suiteWrite("tok-1", now)
		w.exp, w.sameValue, w.curGen = now.Add(time.Minute), true, r1.Gen
		same, err := s.writeRecord(ctx, f, w)
		if err != nil {
			t.Fatal(err)
		}
		if same.Gen != r1.Gen || same.Rev <= r1.Rev {
			t.Errorf("same value rewritten: gen %d rev %d; want gen %d and a revision above %d", same.Gen, same.Rev, r1.Gen, r1.Rev)
		}
		w = suiteWrite("tok-2", now)
		w.curGen = same.Gen
		r2, err := s.writeRecord(ctx, f, w)
		if err != nil {
			t.Fatal(err)
		}
		if r2.Gen != r1.Gen+1 || r2.Rev <= same.Rev {
			t.Errorf("new value: gen %d rev %d; want gen %d and a revision above %d", r2.Gen, r2.Rev, r1.Gen+1, same.Rev)
		}
		// The leader knows a higher generation than Redis (Redis lost data):
		// the count continues from the leader's.
		w = suiteWrite("tok-3", now)
		w.curGen = 40
		r3, err := s.writeRecord(ctx, f, w)
		if err != nil {
			t.Fatal(err)
		}
		if r3.Gen != 41 {
			t.Errorf("leader knows gen 40: stored gen %d; want 41", r3.Gen)
		}
		// Redis holds a higher generation than the leader knows: it wins.
		w = suiteWrite("tok-4", now)
		w.curGen = 1
		r4, err := s.writeRecord(ctx, f, w)
		if err != nil {
			t.Fatal(err)
		}
		if r4.Gen != 42 {
			t.Errorf("redis holds gen 41, leader knows 1: stored gen %d; want 42", r4.Gen)
		}
	})

	t.Run("pre-call counts quota and records intent", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		f := suiteLead(t, s, "a")
		now := time.Now()
		call := preCallArgs{ns: testNS, appid: "wxapp", api: "token", day: day(now), mode: callPlain,
			forceMinInterval: time.Minute, forceDailyCap: 2, intentField: "wxapp", intentValue: intentValue(f.epoch, now, callPlain)}
		for want := int64(1); want <= 2; want++ {
			res, err := s.preCall(ctx, f, call)
			if err != nil {
				t.Fatalf("preCall: %v", err)
			}
			if res.quota != want {
				t.Errorf("quota after call %d = %d", want, res.quota)
			}
		}
		intents, err := s.intents(ctx)
		if err != nil {
			t.Fatalf("intents: %v", err)
		}
		in, err := parseIntent(intents[testNS]["wxapp"])
		if err != nil || epochString(in.epoch) != f.epoch || in.mode != callPlain {
			t.Errorf("recorded intent %+v (%v); want epoch %s mode %s", in, err, f.epoch, callPlain)
		}
		// A write that settles the call removes its intent in the same script.
		w := suiteWrite("tok-1", now)
		w.settles = "wxapp"
		if _, err := s.writeRecord(ctx, f, w); err != nil {
			t.Fatal(err)
		}
		if intents, _ := s.intents(ctx); intents[testNS]["wxapp"] != "" {
			t.Errorf("intent left after the settling write: %q", intents[testNS]["wxapp"])
		}
		// clearIntent removes this term's intent.
		if _, err := s.preCall(ctx, f, call); err != nil {
			t.Fatal(err)
		}
		if err := s.clearIntent(ctx, f, testNS, "wxapp"); err != nil {
			t.Fatal(err)
		}
		if intents, _ := s.intents(ctx); intents[testNS]["wxapp"] != "" {
			t.Errorf("intent left after clearIntent: %q", intents[testNS]["wxapp"])
		}
		// Forced calls: force_min_interval, then the daily cap.
		forced := call
		forced.mode, forced.intentValue = callForced, intentValue(f.epoch, now, callForced)
		res, err := s.preCall(ctx, f, forced)
		if err != nil || res.forced != 1 {
			t.Fatalf("first forced call: forced %d, %v; want 1, nil", res.forced, err)
		}
		if _, err := s.preCall(ctx, f, forced); !errors.Is(err, errForceInterval) {
			t.Errorf("forced call within force_min_interval = %v; want errForceInterval", err)
		}
		forced.forceMinInterval = 0
		if err := s.rdb.Do(ctx, "DEL", s.keys.forceLast(testNS, "wxapp")).Err(); err != nil {
			t.Fatal(err)
		}
		if res, err := s.preCall(ctx, f, forced); err != nil || res.forced != 2 {
			t.Fatalf("second forced call: forced %d, %v; want 2, nil", res.forced, err)
		}
		if _, err := s.preCall(ctx, f, forced); !errors.Is(err, errForceCap) {
			t.Errorf("forced call over force_daily_cap = %v; want errForceCap", err)
		}
	})

	t.Run("epoch is taken and monotonic", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		lock, err := s.obtainLock(ctx, "a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		lv := lock.Token() + lock.Metadata()
		e1, moved, err := s.takeEpoch(ctx, lv, 0)
		if err != nil || e1 != 1 || moved {
			t.Fatalf("first epoch = %d moved %v, %v; want 1 false nil", e1, moved, err)
		}
		// A Redis that forgot its epoch (restart without data): the epoch
		// moves past the highest one the replica knows.
		e2, moved, err := s.takeEpoch(ctx, lv, 10)
		if err != nil || e2 != 11 || !moved {
			t.Fatalf("epoch with 10 known = %d moved %v, %v; want 11 true nil", e2, moved, err)
		}
		e3, _, err := s.takeEpoch(ctx, lv, 0)
		if err != nil || e3 != 12 {
			t.Fatalf("next epoch = %d, %v; want 12", e3, err)
		}
		if _, _, err := s.takeEpoch(ctx, "someone-else|b", 0); !errors.Is(err, errFenced) {
			t.Errorf("takeEpoch without the lock = %v; want errFenced", err)
		}
		id, epoch, err := s.readLeader(ctx)
		if err != nil || id != "a" || epoch != 12 {
			t.Errorf("readLeader = %q %d %v; want a 12", id, epoch, err)
		}
		if ttl, err := s.lockTTL(ctx); err != nil || ttl <= 0 || ttl > time.Minute {
			t.Errorf("lockTTL = %s, %v; want within (0, 1m]", ttl, err)
		}
	})

	t.Run("snapshot round trip", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		f := suiteLead(t, s, "a")
		now := time.Now()
		cfg := testConfig(t, classicApp(1, "jsapi"))
		app := appID(1)
		want := map[string]map[string]*record{testNS: {}, suiteOtherNS: {}}
		for _, w := range []recordWrite{
			{ns: testNS, field: app + "/" + KindAccessToken, value: "tok-1", exp: now.Add(time.Hour), at: now, issuedTTL: "0"},
			{ns: testNS, field: app + "/" + KindJSAPITicket, value: "ticket-1", exp: now.Add(time.Hour), at: now, src: shortHash("tok-1")},
			{ns: suiteOtherNS, field: "wxother/" + KindAccessToken, value: "tok-2", exp: now.Add(time.Hour), at: now, issuedTTL: "0"},
		} {
			rec, err := s.writeRecord(ctx, f, w)
			if err != nil {
				t.Fatal(err)
			}
			want[w.ns][w.field] = rec
		}
		if _, err := s.preCall(ctx, f, preCallArgs{ns: testNS, appid: app, api: "token", day: day(now), mode: callPlain, forceDailyCap: 5}); err != nil {
			t.Fatal(err)
		}
		if err := s.writeStatus(ctx, f, testNS, app+"/"+KindAccessToken, &refreshStatus{RetriesStopped: true}); err != nil {
			t.Fatal(err)
		}
		all, err := s.records(ctx)
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		for ns, fields := range want {
			if len(all[ns]) != len(fields) {
				t.Errorf("namespace %s: %d records loaded; want %d", ns, len(all[ns]), len(fields))
			}
			for field, rec := range fields {
				got, err := parseRecord(all[ns][field])
				if err != nil || *got != *rec {
					t.Errorf("%s %s loaded %+v (%v); want %+v", ns, field, got, err, rec)
				}
			}
		}
		snap, err := s.gather(ctx, cfg, now)
		if err != nil {
			t.Fatalf("gather: %v", err)
		}
		if snap.leader != "a" || epochString(snap.epoch) != f.epoch {
			t.Errorf("snapshot leader %q epoch %d; want a %s", snap.leader, snap.epoch, f.epoch)
		}
		if got := snap.records[testNS][app+"/"+KindJSAPITicket]; got == nil || *got != *want[testNS][app+"/"+KindJSAPITicket] {
			t.Errorf("snapshot ticket %+v", got)
		}
		if st := snap.status[testNS][app+"/"+KindAccessToken]; st == nil || !st.RetriesStopped {
			t.Errorf("snapshot status %+v; want retries stopped", st)
		}
		if n := snap.quota[testNS+"/"+app]["token"]; n != 1 {
			t.Errorf("snapshot quota %d; want 1", n)
		}
	})

	t.Run("publish reaches a subscriber", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		ps := s.subscribe(ctx)
		t.Cleanup(func() { _ = ps.Close() })
		subscribed := map[string]bool{}
		for len(subscribed) < 3 {
			msg, err := ps.ReceiveTimeout(ctx, 10*time.Second)
			if err != nil {
				t.Fatalf("waiting for the subscriptions: %v", err)
			}
			if sub, ok := msg.(*redis.Subscription); ok {
				subscribed[sub.Channel] = true
			}
		}
		f := suiteLead(t, s, "a")
		rec, err := s.writeRecord(ctx, f, suiteWrite("tok-1", time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.publish(ctx, chanInval, "report"); err != nil {
			t.Fatalf("publish: %v", err)
		}
		want := map[string]string{
			s.keys.events(): testNS + "\twxapp/" + KindAccessToken + "\t",
			s.keys.inval():  "report",
		}
		for len(want) > 0 {
			msg, err := ps.ReceiveTimeout(ctx, 10*time.Second)
			if err != nil {
				t.Fatalf("waiting for %v: %v", want, err)
			}
			m, ok := msg.(*redis.Message)
			if !ok {
				continue
			}
			prefix, ok := want[m.Channel]
			if !ok || !strings.HasPrefix(m.Payload, prefix) {
				t.Fatalf("unexpected message %s %q", m.Channel, m.Payload)
			}
			if m.Channel == s.keys.events() {
				got, err := parseRecord(strings.TrimPrefix(m.Payload, prefix))
				if err != nil || *got != *rec {
					t.Errorf("published record %+v (%v); want %+v", got, err, rec)
				}
			}
			delete(want, m.Channel)
		}
	})

	t.Run("issued-token index with TTL", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		f := suiteLead(t, s, "a")
		now := time.Now()
		w := suiteWrite("tok-issued", now)
		w.ns = suiteOtherNS
		if _, err := s.writeRecord(ctx, f, w); err != nil {
			t.Fatal(err)
		}
		ns, field, exp, found, err := s.lookupIssued(ctx, "tok-issued")
		if err != nil || !found || ns != suiteOtherNS || field != w.field || !exp.Equal(w.exp.Truncate(time.Millisecond)) {
			t.Errorf("lookupIssued = %s %s %s %v %v; want %s %s %s", ns, field, exp, found, err, suiteOtherNS, w.field, w.exp)
		}
		ttl, err := s.rdb.PTTL(ctx, s.keys.issued(suiteOtherNS, "tok-issued")).Result()
		if err != nil || ttl <= time.Hour-time.Minute || ttl > time.Hour+issuedKeep {
			t.Errorf("issued entry TTL = %s, %v; want about the token's life plus %s", ttl, err, issuedKeep)
		}
		if _, _, _, found, err := s.lookupIssued(ctx, "tok-never-issued"); found || err != nil {
			t.Errorf("lookup of an unknown token: found %v, %v", found, err)
		}
		dead := suiteWrite("tok-dead", now)
		dead.exp = now.Add(-time.Second)
		dead.issuedTTL = issuedTTL(dead.exp, now)
		if _, err := s.writeRecord(ctx, f, dead); err != nil {
			t.Fatal(err)
		}
		if _, _, _, found, _ := s.lookupIssued(ctx, "tok-dead"); found {
			t.Error("an already expired token was indexed as issued")
		}
	})
}

// TestNamespaceKeys (invariant 6): every per-app Redis key lives under its
// namespace, and a namespace's hashes hold only its own apps.
func TestNamespaceKeys(t *testing.T) {
	prodApp, stagingApp := classicApp(1, "jsapi"), classicApp(2)
	cfg := testConfig(t, prodApp)
	cfg.Namespaces["staging"] = &config.Namespace{Apps: []*config.App{stagingApp}}
	cfg.Refresh.ForceMinInterval = time.Minute // leaves a forcelast marker
	e := newEnv(t, wechattest.Options{}, cfg)
	n := e.start("a")
	leader(t, 5*time.Second, n)
	apps := map[string]*config.App{testNS: prodApp, "staging": stagingApp}
	for ns, a := range apps {
		var cur Token
		waitFor(t, 5*time.Second, "a token in "+ns, func() bool {
			var err error
			cur, err = n.b.AccessToken(ns, a.AppID)
			return err == nil
		})
		if _, err := n.b.Invalidate(context.Background(), ns, a.AppID, cur.AccessToken, metrics.SourceClient); err != nil {
			t.Fatalf("Invalidate in %s: %v", ns, err)
		}
	}
	waitFor(t, 5*time.Second, "the ticket", func() bool {
		_, err := n.b.Ticket(testNS, prodApp.AppID, "jsapi")
		return err == nil
	})

	ctx := context.Background()
	rdb := e.redis.Client(t)
	k := n.b.store.keys
	all, err := rdb.Keys(ctx, k.p+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	global := map[string]bool{k.lock(): true, k.epoch(): true, k.rev(): true}
	kinds := map[string]map[string]bool{testNS: {}, "staging": {}}
	for _, key := range all {
		if global[key] {
			continue
		}
		rest, ok := strings.CutPrefix(key, k.p+":ns:")
		ns, rest, ok2 := strings.Cut(rest, ":")
		a := apps[ns]
		if !ok || !ok2 || a == nil {
			t.Errorf("key %q is not under a namespace", key)
			continue
		}
		kind, _, _ := strings.Cut(rest, ":")
		kinds[ns][kind] = true
		for other, o := range apps {
			if other != ns && strings.Contains(rest, o.AppID) {
				t.Errorf("key %q of namespace %s names %s's app", key, ns, other)
			}
		}
	}
	for ns, a := range apps {
		for _, want := range []string{"tok", "st", "quota", "force", "forcelast"} {
			if !kinds[ns][want] {
				t.Errorf("no %q key under namespace %s (keys: %v)", want, ns, all)
			}
		}
		for _, h := range []string{k.tok(ns), k.status(ns)} {
			fields, err := rdb.HKeys(ctx, h).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fields {
				if !strings.HasPrefix(f, a.AppID+"/") {
					t.Errorf("hash %s holds %q, not an app of namespace %s", h, f, ns)
				}
			}
		}
	}
}
