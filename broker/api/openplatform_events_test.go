package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	testMsgToken = "msgToken4711"
	testAESKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// eventsEnv is one receiver (or two, sharing the fake's replay store as
// replicas share Redis) on real listeners.
type eventsEnv struct {
	t    *testing.T
	sink *fakePlatform
	m    *metrics.Metrics
	logs *observer.ObservedLogs
	ev   []*Events
	urls []string
}

func newEventsEnv(t *testing.T, replicas int) *eventsEnv {
	t.Helper()
	env := &eventsEnv{t: t, sink: newFakePlatform(), m: metrics.New(prometheus.NewRegistry())}
	core, logs := observer.New(zapcore.DebugLevel)
	env.logs = logs
	for range replicas {
		e, err := NewEvents(EventsOptions{Sink: env.sink, Config: platformConfig(), Logger: zap.New(core), Metrics: env.m})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(e.Handler())
		t.Cleanup(func() { srv.Close(); e.Close() })
		env.ev = append(env.ev, e)
		env.urls = append(env.urls, srv.URL)
	}
	return env
}

// eventURL is the event URL of component id on replica i.
func (env *eventsEnv) eventURL(i int, id string) string {
	return env.urls[i] + "/open/" + id + "/events"
}

func (env *eventsEnv) count(comp, info, result string) float64 {
	ns := "open"
	if comp == metrics.EventUnknown {
		ns = metrics.EventUnknown
	}
	return testutil.ToFloat64(env.m.OpenPlatformEvents.WithLabelValues(ns, comp, info, result))
}

// sim is a simulator (no automatic pushes) with component id registered,
// pushing to url with the given message token.
func newPushSim(t *testing.T, now func() time.Time, id, token, url string) *wechattest.Sim {
	t.Helper()
	s := wechattest.New(wechattest.Options{Now: now})
	if err := s.AddComponent(wechattest.Component{AppID: id, Secret: "cs", Token: token, EncodingAESKey: testAESKey, EventURL: url}); err != nil {
		t.Fatal(err)
	}
	return s
}

// post sends a push by hand and returns the status and body.
func post(t *testing.T, u string, q url.Values, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(u+"?"+q.Encode(), "text/xml", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func sealedQuery(s msgcrypt.Sealed) url.Values {
	return url.Values{"timestamp": {s.Timestamp}, "nonce": {s.Nonce}, "msg_signature": {s.MsgSignature},
		"signature": {s.Signature}, "encrypt_type": {"aes"}}
}

func seal(t *testing.T, appid string, ev msgcrypt.Event, ts time.Time, nonce string) msgcrypt.Sealed {
	t.Helper()
	c, err := msgcrypt.New(testMsgToken, testAESKey, appid)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Seal(ev.XML(), strconv.FormatInt(ts.Unix(), 10), nonce)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEventsFromSimulator: the simulator's real encrypted pushes reach the
// receiver on a real listener: ticket and authorization events decrypted,
// signature-checked and handed to the engine once; WeChat's re-push of the
// same bytes refused as a replay, on the other replica too; a push signed
// with another token, one made for another component or one with an old
// timestamp refused; every outcome counted.
func TestEventsFromSimulator(t *testing.T) {
	env := newEventsEnv(t, 2)
	ctx := context.Background()
	sim := newPushSim(t, nil, compA, testMsgToken, env.eventURL(0, compA))

	ticket, err := sim.PushTicket(ctx, compA)
	if err != nil {
		t.Fatalf("ticket push: %v", err)
	}
	code, err := sim.Authorize(ctx, compA, authA)
	if err != nil {
		t.Fatalf("authorized push: %v", err)
	}
	evs := env.sink.eventList()
	if len(evs) != 2 || evs[0].InfoType != msgcrypt.InfoVerifyTicket || evs[0].VerifyTicket != ticket ||
		evs[1].InfoType != msgcrypt.InfoAuthorized || evs[1].AuthorizerAppID != authA || evs[1].AuthorizationCode != code {
		t.Fatalf("events handed on = %+v; want the ticket %q, then authorized %s with its code", evs, ticket, authA)
	}
	// WeChat pushes again, byte for byte, when it missed the answer.
	if err := sim.RepushLast(ctx, compA); err == nil {
		t.Error("re-push of the same bytes accepted; want a replay refusal")
	}
	if err := sim.Revoke(ctx, compA, authA); err != nil {
		t.Fatalf("unauthorized push: %v", err)
	}
	if evs := env.sink.eventList(); len(evs) != 3 || evs[2].InfoType != msgcrypt.InfoUnauthorized {
		t.Fatalf("events = %+v; want a third, unauthorized", evs)
	}

	// The same push at the other replica: the replay store is shared.
	sim2 := newPushSim(t, nil, compA, testMsgToken, env.eventURL(0, compA))
	if _, err := sim2.PushTicket(ctx, compA); err != nil {
		t.Fatal(err)
	}
	sim2.AddComponent(wechattest.Component{AppID: compA, Secret: "cs", Token: testMsgToken, EncodingAESKey: testAESKey, EventURL: env.eventURL(1, compA)})
	if err := sim2.RepushLast(ctx, compA); err == nil {
		t.Error("replay at the other replica accepted")
	}

	// Signed with another message token.
	bad := newPushSim(t, nil, compA, "otherToken99", env.eventURL(0, compA))
	if _, err := bad.PushTicket(ctx, compA); err == nil {
		t.Error("push signed with another token accepted")
	}
	// Made for another component (same token and key), pushed to compA's URL.
	other := newPushSim(t, nil, compB, testMsgToken, env.eventURL(0, compA))
	if _, err := other.PushTicket(ctx, compB); err == nil {
		t.Error("push of another component accepted")
	}
	// Ten minutes old.
	old := newPushSim(t, func() time.Time { return time.Now().Add(-10 * time.Minute) }, compA, testMsgToken, env.eventURL(0, compA))
	if _, err := old.PushTicket(ctx, compA); err == nil {
		t.Error("push with a 10-minute-old timestamp accepted")
	}
	// Five minutes ahead, beyond the window.
	ahead := newPushSim(t, func() time.Time { return time.Now().Add(EventWindow + time.Minute) }, compA, testMsgToken, env.eventURL(0, compA))
	if _, err := ahead.PushTicket(ctx, compA); err == nil {
		t.Error("push with a timestamp 6 minutes ahead accepted")
	}
	if n := len(env.sink.eventList()); n != 4 {
		t.Errorf("%d events handed on; want 4 (3 from the first simulator, 1 from the second)", n)
	}

	for _, c := range []struct {
		info, result string
		want         float64
	}{
		{"component_verify_ticket", "accepted", 2},
		{"authorized", "accepted", 1},
		{"unauthorized", "accepted", 1},
		{"authorized", "replay", 1},
		{"component_verify_ticket", "replay", 1},
		{"unknown", "bad_signature", 1},
		{"unknown", "bad_appid", 1},
		{"unknown", "stale_timestamp", 2},
		{"unknown", "malformed", 0},
	} {
		if got := env.count(compA, c.info, c.result); got != c.want {
			t.Errorf("events{%s,%s,%s} = %v; want %v", compA, c.info, c.result, got, c.want)
		}
	}
	for _, l := range env.logs.All() {
		s := l.Message + fmt.Sprint(l.ContextMap())
		if strings.Contains(s, ticket) || strings.Contains(s, code) || strings.Contains(s, testAESKey) || strings.Contains(s, testMsgToken) {
			t.Errorf("log line holds a ticket, code or key: %s", s)
		}
	}
}

// TestEventsRefusals: pushes that are not WeChat's are refused with 4xx and
// counted; nothing reaches the engine.
func TestEventsRefusals(t *testing.T) {
	env := newEventsEnv(t, 1)
	u := env.eventURL(0, compA)
	now := time.Now()
	good := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "T"}, now, "1")
	q := sealedQuery(good)

	// The tail of the ciphertext names compB; the envelope is rewritten to
	// say compA, and the signature made with the right token.
	forB := seal(t, compB, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "T"}, now, "2")
	tailBody := bytes.Replace(forB.Body, []byte(compB), []byte(compA), 1)
	// The event inside names compB, the ciphertext and envelope compA.
	inner := seal(t, compA, msgcrypt.Event{AppID: compB, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "T"}, now, "3")
	// A decrypted event that lacks its ticket.
	empty := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket}, now, "4")

	without := func(k string) url.Values {
		v := url.Values{}
		for kk, vv := range q {
			if kk != k {
				v[kk] = vv
			}
		}
		return v
	}
	tests := []struct {
		name         string
		url          string
		q            url.Values
		body         []byte
		status       int
		comp, info   string
		wantedResult string
	}{
		{"unknown component", env.eventURL(0, "wx00000000000000ff"), q, good.Body, 404, metrics.EventUnknown, "unknown", "bad_appid"},
		{"no msg_signature", u, without("msg_signature"), good.Body, 400, compA, "unknown", "malformed"},
		{"no nonce", u, without("nonce"), good.Body, 400, compA, "unknown", "malformed"},
		{"not aes", u, without("encrypt_type"), good.Body, 400, compA, "unknown", "malformed"},
		{"not XML", u, q, []byte("hello"), 400, compA, "unknown", "malformed"},
		{"too large", u, q, bytes.Repeat([]byte("x"), maxEventBody+1), 413, compA, "unknown", "malformed"},
		{"altered ciphertext", u, q, bytes.Replace(good.Body, []byte("<Encrypt><![CDATA["), []byte("<Encrypt><![CDATA[AAAA"), 1), 403, compA, "unknown", "bad_signature"},
		{"wrong signature", u, func() url.Values {
			v := without("msg_signature")
			v.Set("msg_signature", strings.Repeat("0", 40))
			return v
		}(), good.Body, 403, compA, "unknown", "bad_signature"},
		{"envelope names another appid", u, q, bytes.Replace(good.Body, []byte(compA), []byte(compB), 1), 403, compA, "unknown", "bad_appid"},
		{"ciphertext for another appid", u, sealedQuery(forB), tailBody, 403, compA, "unknown", "bad_appid"},
		{"event names another appid", u, sealedQuery(inner), inner.Body, 403, compA, "component_verify_ticket", "bad_appid"},
		{"event lacks its field", u, sealedQuery(empty), empty.Body, 400, compA, "component_verify_ticket", "malformed"},
	}
	for _, tt := range tests {
		before := env.count(tt.comp, tt.info, tt.wantedResult)
		st, body := post(t, tt.url, tt.q, tt.body)
		if st != tt.status || body == "success" {
			t.Errorf("%s: %d %q; want %d", tt.name, st, body, tt.status)
		}
		if got := env.count(tt.comp, tt.info, tt.wantedResult) - before; got != 1 {
			t.Errorf("%s: events{%s,%s,%s} grew by %v; want 1", tt.name, tt.comp, tt.info, tt.wantedResult, got)
		}
	}
	if evs := env.sink.eventList(); len(evs) != 0 {
		t.Errorf("events handed on: %+v; want none", evs)
	}
	// A body too large without a Content-Length (chunked) is cut at the
	// limit all the same.
	big := io.MultiReader(bytes.NewReader(good.Body[:len(good.Body)-6]), bytes.NewReader(bytes.Repeat([]byte(" "), maxEventBody)), strings.NewReader("</xml>"))
	before := env.count(compA, "unknown", "malformed")
	resp, err := http.Post(u+"?"+q.Encode(), "text/xml", big)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit = %d; want 413", resp.StatusCode)
	}
	if got := env.count(compA, "unknown", "malformed") - before; got != 1 {
		t.Errorf("chunked body over the limit counted %v malformed; want 1", got)
	}
	// GET is no push.
	resp, err = http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET = %d; want 405", resp.StatusCode)
	}
	// The good push still works (it was never recorded).
	if st, body := post(t, u, q, good.Body); st != 200 || body != "success" {
		t.Errorf("good push = %d %q; want 200 success", st, body)
	}
}

// TestEventsUnknownInfoType: an InfoType the broker does not act on is
// answered success and ignored.
func TestEventsUnknownInfoType(t *testing.T) {
	env := newEventsEnv(t, 1)
	now := time.Now()
	s := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: "notify_third_fasteregister"}, now, "9")
	if st, body := post(t, env.eventURL(0, compA), sealedQuery(s), s.Body); st != 200 || body != "success" {
		t.Fatalf("unknown InfoType = %d %q; want 200 success", st, body)
	}
	if len(env.sink.eventList()) != 0 {
		t.Error("an unknown InfoType was handed on")
	}
	if got := env.count(compA, "other", "accepted"); got != 1 {
		t.Errorf("events{other,accepted} = %v; want 1", got)
	}
}

// TestEventsAnswerInTime: handling that outlasts the answer time is
// answered success at once and goes on; it is counted when it ends. A
// handling error answers 500 and counts error; a replay store that cannot
// be reached answers 503, records nothing, and WeChat's next attempt is
// handled.
func TestEventsAnswerInTime(t *testing.T) {
	env := newEventsEnv(t, 1)
	env.ev[0].answer = 200 * time.Millisecond
	u := env.eventURL(0, compA)
	now := time.Now()
	push := func(nonce string) (int, string) {
		s := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoAuthorized,
			AuthorizerAppID: authA, AuthorizationCode: "CODE-" + nonce}, now, nonce)
		return post(t, u, sealedQuery(s), s.Body)
	}

	block := make(chan struct{})
	env.sink.mu.Lock()
	env.sink.block = block
	env.sink.mu.Unlock()
	start := time.Now()
	if st, body := push("1"); st != 200 || body != "success" {
		t.Fatalf("slow handling = %d %q; want 200 success", st, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("answered after %s; WeChat waits 5 s", d)
	}
	if got := env.count(compA, "authorized", "accepted"); got != 0 {
		t.Errorf("counted %v before the handling ended; want 0", got)
	}
	close(block)
	waittest.For(t, "the late handling to be counted", 10*time.Second, func() bool {
		return env.count(compA, "authorized", "accepted") == 1
	})
	if evs := env.sink.eventList(); len(evs) != 1 || evs[0].AuthorizationCode != "CODE-1" {
		t.Errorf("events = %+v; want the authorization handled after the answer", evs)
	}

	env.sink.mu.Lock()
	env.sink.block, env.sink.handleErr = nil, errors.New("redis: connection refused")
	env.sink.mu.Unlock()
	if st, _ := push("2"); st != 500 {
		t.Errorf("handling error = %d; want 500", st)
	}
	if got := env.count(compA, "authorized", "error"); got != 1 {
		t.Errorf("events{authorized,error} = %v; want 1", got)
	}

	env.sink.mu.Lock()
	env.sink.handleErr, env.sink.seenErr = nil, errors.New("redis down")
	env.sink.mu.Unlock()
	if st, _ := push("3"); st != 503 {
		t.Errorf("replay store down = %d; want 503", st)
	}
	env.sink.mu.Lock()
	env.sink.seenErr = nil
	env.sink.mu.Unlock()
	if st, body := push("3"); st != 200 || body != "success" {
		t.Errorf("WeChat's next attempt after the store came back = %d %q; want 200 success", st, body)
	}
	if got := env.count(compA, "authorized", "error"); got != 2 {
		t.Errorf("events{authorized,error} = %v; want 2", got)
	}
}

// TestEventsReload: a component added by a reload is received at once; a
// removed one is refused and its series deleted.
func TestEventsReload(t *testing.T) {
	env := newEventsEnv(t, 1)
	cfg := platformConfig()
	cfg.Namespaces["open"].Components = cfg.Namespaces["open"].Components[:1] // compA only
	const compC = "wx00000000000000c3"
	cfg.Namespaces["staging"].Components = []*config.Component{{AppID: compC, Secret: "cs", Token: testMsgToken, EncodingAESKey: testAESKey}}
	commit, err := env.ev[0].PrepareReload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	now := time.Now()
	s := seal(t, compC, msgcrypt.Event{AppID: compC, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "T"}, now, "1")
	if st, body := post(t, env.eventURL(0, compC), sealedQuery(s), s.Body); st != 200 || body != "success" {
		t.Errorf("added component = %d %q", st, body)
	}
	if got := testutil.ToFloat64(env.m.OpenPlatformEvents.WithLabelValues("staging", compC, "component_verify_ticket", "accepted")); got != 1 {
		t.Errorf("events of the added component = %v; want 1", got)
	}
	s = seal(t, compB, msgcrypt.Event{AppID: compB, CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "T"}, now, "2")
	if st, _ := post(t, env.eventURL(0, compB), sealedQuery(s), s.Body); st != 404 {
		t.Errorf("removed component = %d; want 404", st)
	}
	if s := seriesNaming(t, env.m.OpenPlatformEvents, compB); s != "" {
		t.Errorf("a series of the removed component is left: %s", s)
	}
}

// TestEventsHandledAgainAfterFailure: a push whose handling failed is
// handled when WeChat pushes it again, byte for byte, once; a further copy
// is a replay. A push handled to the end comes again only as a replay,
// also at another replica.
func TestEventsHandledAgainAfterFailure(t *testing.T) {
	env := newEventsEnv(t, 2)
	now := time.Now()
	s := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoAuthorized,
		AuthorizerAppID: authA, AuthorizationCode: "CODE-F"}, now, "f1")
	setErr := func(err error) {
		env.sink.mu.Lock()
		env.sink.handleErr = err
		env.sink.mu.Unlock()
	}

	setErr(errors.New("api_query_auth: errcode -1"))
	if st, _ := post(t, env.eventURL(0, compA), sealedQuery(s), s.Body); st != 500 {
		t.Fatalf("failed handling = %d; want 500", st)
	}
	setErr(nil)
	if st, body := post(t, env.eventURL(1, compA), sealedQuery(s), s.Body); st != 200 || body != "success" {
		t.Fatalf("WeChat's next push after a failed handling = %d %q; want 200 success", st, body)
	}
	if evs := env.sink.eventList(); len(evs) != 1 || evs[0].AuthorizationCode != "CODE-F" {
		t.Fatalf("events = %+v; want the authorization handled on the second push", evs)
	}
	for i := range 2 {
		if st, body := post(t, env.eventURL(i, compA), sealedQuery(s), s.Body); st != 409 || body != "replay" {
			t.Errorf("third copy at replica %d = %d %q; want 409 replay", i, st, body)
		}
	}

	// Failing twice: the second attempt is the last.
	s2 := seal(t, compA, msgcrypt.Event{AppID: compA, CreateTime: now, InfoType: msgcrypt.InfoAuthorized,
		AuthorizerAppID: authA, AuthorizationCode: "CODE-G"}, now, "f2")
	setErr(errors.New("redis: connection refused"))
	for i, want := range []int{500, 500, 409} {
		if st, _ := post(t, env.eventURL(0, compA), sealedQuery(s2), s2.Body); st != want {
			t.Errorf("copy %d of a push whose handling keeps failing = %d; want %d", i+1, st, want)
		}
	}
	setErr(nil)
	if got := env.count(compA, "authorized", "error"); got != 3 {
		t.Errorf("events{authorized,error} = %v; want 3", got)
	}
	if got := env.count(compA, "authorized", "replay"); got != 3 {
		t.Errorf("events{authorized,replay} = %v; want 3", got)
	}
	if got := env.count(compA, "authorized", "accepted"); got != 1 {
		t.Errorf("events{authorized,accepted} = %v; want 1", got)
	}
}
