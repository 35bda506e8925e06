//go:build chaos

package chaos

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/redistest"
)

// The Open Platform component of the deployment (deployment.op).
const (
	component       = "wx3000000000000001"
	componentSecret = "secret-component"
	componentToken  = "chaosMsgToken42"
	componentAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	apiAuthorizer   = "api_authorizer_token"
	apiListing      = "api_get_authorizer_list"
)

// refreshTokenKey is open_platform.refresh_token_encryption_key: 32 bytes.
var refreshTokenKey = base64.StdEncoding.EncodeToString([]byte("chaos-refresh-token-key-32-bytes"))

// opConfig returns the YAML the deployment adds for the component: the
// components: list of namespace prod, the client's allow list (the
// authorizers need a three-part pattern) and the open_platform and
// public_listen keys (public_listen with a %d for the port).
func opConfig() (components, allow, public string) {
	components = fmt.Sprintf("    components:\n      - {component_appid: %s, component_secret: %s, token: %s, encoding_aes_key: %s}\n",
		component, componentSecret, componentToken, componentAESKey)
	public = fmt.Sprintf("open_platform: {refresh_token_encryption_key: %q}\npublic_listen: 127.0.0.1:%%d\n", refreshTokenKey)
	return components, `["*/*", "*/*/*"]`, public
}

func authorizerID(i int) string { return fmt.Sprintf("wx4%015x", i+1) }

func authorizerPath(a string) string {
	return "/v1/namespaces/prod/components/" + component + "/authorizers/" + a + "/access_token"
}

// azReads are the figures of the authorizer reads; guarded by recorder.mu.
type azReads struct {
	ids      []string
	armed    bool // the authorizers exist: read them
	next     map[*broker]int
	reads    int
	errors   map[string]int
	invalid  int // reads of a token dead for more than propagation
	dead     int // reads of a token dead before the read began
	unknown  int
	late     time.Duration
	log      []string
	tokens   map[string]string // token → authorizer
	newToks  int               // distinct tokens first seen in the measured window
	measured bool
}

func newAzReads(ids []string) *azReads {
	return &azReads{ids: ids, next: map[*broker]int{}, errors: map[string]int{}, tokens: map[string]string{}}
}

func (z *azReads) begin() {
	z.reads, z.invalid, z.dead, z.unknown, z.late, z.newToks = 0, 0, 0, 0, 0, 0
	z.errors, z.log = map[string]int{}, nil
	z.measured = z.armed
}

// readAuthorizer reads the next authorizer's token from b and asks the
// simulator whether it was alive, as readOnce does for the apps.
func (r *recorder) readAuthorizer(b *broker) {
	r.mu.Lock()
	z := r.az
	if !z.armed {
		r.mu.Unlock()
		return
	}
	a := z.ids[z.next[b]%len(z.ids)]
	z.next[b]++
	r.mu.Unlock()
	start := time.Now()
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	code, body, err := getJSON(b.base+authorizerPath(a), clientKey, &tok)
	if b.down.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	z.reads++
	switch {
	case err != nil && code == 0:
		z.errors["transport"]++
		return
	case code != 200:
		z.errors[fmt.Sprintf("%d %s", code, errCode(body))]++
		if len(z.log) < 20 {
			z.log = append(z.log, fmt.Sprintf("%s %s %s: %d %s", start.Format("15:04:05.000"), b.name, a, code, body))
		}
		return
	case err != nil:
		z.errors["bad body"]++
		return
	}
	if _, ok := z.tokens[tok.AccessToken]; !ok {
		z.tokens[tok.AccessToken] = a
		if z.measured {
			z.newToks++
		}
	}
	r.mu.Unlock()
	deadAt, known, serr := r.d.sim.death(a, tok.AccessToken)
	r.mu.Lock()
	switch {
	case serr != nil:
		z.errors["simulator check"]++
	case !known:
		z.unknown++
		z.log = append(z.log, fmt.Sprintf("%s %s %s: token the simulator never issued", start.Format("15:04:05.000"), b.name, a))
	case deadAt.Before(start):
		late := start.Sub(deadAt)
		z.dead++
		if late > propagation {
			z.invalid++
		}
		z.late = max(z.late, late)
		if len(z.log) < 20 {
			z.log = append(z.log, fmt.Sprintf("%s %s %s: token dead for %s (expires_in %d)", start.Format("15:04:05.000"), b.name, a, late.Round(time.Millisecond), tok.ExpiresIn))
		}
	}
}

// errCode is the code of an API error body, or "".
func errCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &e)
	if e.Error.Code != "" {
		return e.Error.Code
	}
	return e.Code
}

// simPost posts a JSON body to a simulator control endpoint and decodes the answer.
func (s *sim) post(t *testing.T, path string, in, out any) {
	t.Helper()
	b, _ := json.Marshal(in)
	resp, err := httpc.Post(s.url+path, "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("simulator %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("simulator %s: status %d", path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("simulator %s: %v", path, err)
		}
	}
}

// refreshToken returns the simulator's current refresh token of authorizer a.
func (s *sim) refreshToken(t *testing.T, a string) (string, bool) {
	t.Helper()
	var st struct {
		RefreshToken string `json:"refresh_token"`
		Authorized   bool   `json:"authorized"`
	}
	u := s.url + "/sim/components/state?" + url.Values{"component_appid": {component}, "authorizer_appid": {a}}.Encode()
	if code, b, err := getJSON(u, "", &st); err != nil || code != 200 {
		t.Fatalf("simulator state of %s: %d %s %v", a, code, b, err)
	}
	return st.RefreshToken, st.Authorized
}

// stats returns the simulator's calls of api summed over appids, and its
// answers with errcode.
func (s *sim) stats(t *testing.T) (calls map[string]map[string]int, answered map[string]int) {
	t.Helper()
	calls, answered, _ = s.statsAll(t)
	return calls, answered
}

// statsAll is stats and the tokens minted per appid.
func (s *sim) statsAll(t *testing.T) (calls map[string]map[string]int, answered, tokens map[string]int) {
	t.Helper()
	var st struct {
		Calls    map[string]map[string]int `json:"calls"`
		Answered map[string]int            `json:"answered"`
		Tokens   map[string]int            `json:"tokens"`
	}
	if code, b, err := getJSON(s.url+"/sim/stats", "", &st); err != nil || code != 200 {
		t.Fatalf("simulator stats: %d %s %v", code, b, err)
	}
	return st.Calls, st.Answered, st.Tokens
}

// authorizerEntry is one entry of GET …/authorizers.
type authorizerEntry struct {
	AuthorizerAppID string `json:"authorizer_appid"`
	State           string `json:"state"`
	LastError       string `json:"last_error"`
	Source          string `json:"source"`
}

func (d *deployment) authorizers(b *broker) ([]authorizerEntry, error) {
	var out struct {
		Authorizers []authorizerEntry `json:"authorizers"`
	}
	code, body, err := getJSON(b.base+"/v1/namespaces/prod/components/"+component+"/authorizers", clientKey, &out)
	if err != nil {
		return nil, fmt.Errorf("authorizers from %s: %w", b.name, err)
	}
	if code != 200 {
		return nil, fmt.Errorf("authorizers from %s: %d %s", b.name, code, body)
	}
	return out.Authorizers, nil
}

// exported returns the refresh tokens b exports (admin route), by authorizer.
func (d *deployment) exported(b *broker) (map[string]string, error) {
	var out []struct {
		AuthorizerAppID string `json:"authorizer_appid"`
		RefreshToken    string `json:"authorizer_refresh_token"`
	}
	code, body, err := getJSON(b.base+"/v1/namespaces/prod/components/"+component+"/authorizers/export", clientKey, &out)
	if err != nil {
		return nil, fmt.Errorf("export from %s: %w", b.name, err)
	}
	if code != 200 {
		return nil, fmt.Errorf("export from %s: %d %.200s", b.name, code, body)
	}
	m := map[string]string{}
	for _, e := range out {
		m[e.AuthorizerAppID] = e.RefreshToken
	}
	return m, nil
}

// azToken is what b serves for authorizer a: the token and its generation.
func azToken(b *broker, a string) (string, int64, bool) {
	var tok struct {
		AccessToken string `json:"access_token"`
		Generation  int64  `json:"generation"`
	}
	code, _, err := getJSON(b.base+authorizerPath(a), clientKey, &tok)
	return tok.AccessToken, tok.Generation, err == nil && code == 200
}

// TestLeaderKilledDuringAuthorizerRefreshes: a component with 50
// authorizers (authorized through the simulator's encrypted pushes to b0's
// event URL), refresh-token rotation on, tokens living 20 s, so that about
// four authorizer refreshes a second each retire a refresh token. The
// leader is SIGKILLed 14 times, every 4 s or as soon as the last one is
// back, and restarted; every other time it is first stopped while WeChat
// answers a held refresh (heldAuthorizerAnswer), so that Redis keeps a
// refresh token WeChat has retired: the new leader must not lose the
// authorizer (it recovers the current one from api_get_authorizer_list).
// Afterwards every authorizer is active, Redis holds each one's current
// refresh token (the export equals the simulator's), each token is
// refreshed again, and no replica served a dead authorizer token.
func TestLeaderKilledDuringAuthorizerRefreshes(t *testing.T) {
	const (
		n        = 50
		kills    = 14
		killEach = 4 * time.Second
	)
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.op = true
	ids := make([]string, n)
	for i := range ids {
		ids[i] = authorizerID(i)
	}
	d.rec.az = newAzReads(ids)
	d.up(3)
	b0 := d.brokers[0]

	// The component, pushing to b0; its first ticket is pushed at once.
	d.sim.post(t, "/sim/components", map[string]any{
		"component_appid": component, "component_secret": componentSecret, "token": componentToken,
		"encoding_aes_key": componentAESKey, "event_url": b0.pub + "/open/" + component + "/events",
		"rotate_refresh_tokens": true,
	}, nil)
	waitFor(t, "the component token on every replica", 30*time.Second, func() bool {
		for _, b := range d.live() {
			code, _, err := getJSON(b.base+"/v1/namespaces/prod/components/"+component+"/access_token", clientKey, nil)
			if err != nil || code != 200 {
				return false
			}
		}
		return true
	})
	for _, a := range ids {
		var out struct {
			PushError string `json:"push_error"`
		}
		d.sim.post(t, "/sim/components/authorize", map[string]any{"component_appid": component, "authorizer_appid": a}, &out)
		if out.PushError != "" {
			t.Fatalf("authorize %s: the push to b0 failed: %s", a, out.PushError)
		}
	}
	waitFor(t, fmt.Sprintf("%d authorizer tokens on every replica", n), 60*time.Second, func() bool {
		for _, b := range d.live() {
			for _, a := range ids {
				if _, _, ok := azToken(b, a); !ok {
					return false
				}
			}
		}
		return true
	})
	// Start from refreshing authorizers: a few rotations before the first kill.
	calls0, _ := d.sim.stats(t)
	base := sum(calls0[apiAuthorizer])
	waitFor(t, "authorizer refreshes", 30*time.Second, func() bool {
		c, _ := d.sim.stats(t)
		return sum(c[apiAuthorizer]) >= base+n
	})
	d.rec.mu.Lock()
	d.rec.az.armed = true
	d.rec.mu.Unlock()
	d.rec.begin(t)
	callsAt, answeredAt := d.sim.stats(t)

	killed, lostAnswers, lostFor := 0, 0, map[string]bool{}
	killsFrom := time.Now()
	for i := range kills {
		var l *broker
		if i%2 == 0 {
			l = d.leader(10 * time.Second)
		} else {
			var lost []string
			l, lost = heldAuthorizerAnswer(t, d, ids)
			lostAnswers += len(lost)
			for _, a := range lost {
				lostFor[a] = true
			}
		}
		d.kill(l)
		next := time.Now().Add(killEach)
		killed++
		if d.awaitLeader(3*d.tm.lockTTL) == nil {
			break
		}
		d.restart(l)
		d.rec.waitReads(t, 60)
		// The kills are the fault under test: one every killEach at most.
		time.Sleep(time.Until(next))
	}
	lastKill := time.Now()
	d.rec.note(fmt.Sprintf("%d leader kills done", killed))

	// Every authorizer's token is refreshed again after the kills: its
	// stored refresh token works (or was recovered).
	after := map[string]int64{}
	for _, a := range ids {
		_, g, _ := azToken(d.brokers[1], a)
		after[a] = g
	}
	waitFor(t, "every authorizer refreshed after the last kill", 3*tokenTTL, func() bool {
		for _, a := range ids {
			if _, g, ok := azToken(d.brokers[1], a); !ok || g <= after[a] {
				return false
			}
		}
		return true
	})
	refreshedIn := time.Since(lastKill)

	// Redis holds every authorizer's current refresh token: what the broker
	// exports equals what the simulator accepts (a refresh may rotate one
	// between the two readings: wait until they agree).
	var mismatch []string
	waitUntil(2*tokenTTL, func() bool {
		exp, err := d.exported(d.brokers[2])
		if err != nil {
			mismatch = []string{err.Error()}
			return false
		}
		mismatch = nil
		for _, a := range ids {
			rt, ok := d.sim.refreshToken(t, a)
			if !ok || rt == "" || exp[a] != rt {
				mismatch = append(mismatch, a)
			}
		}
		return len(mismatch) == 0
	})
	states := map[string]int{}
	sources := map[string]int{}
	list, err := d.authorizers(d.brokers[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		states[e.State]++
		sources[e.Source]++
		if e.State != "active" {
			t.Errorf("authorizer %s is %s (last_error %q)", e.AuthorizerAppID, e.State, e.LastError)
		}
	}
	callsEnd, answeredEnd := d.sim.stats(t)
	f := d.rec.finish(t, fmt.Sprintf("leader SIGKILL x%d during %d authorizer refreshes (rotation on)", killed, n), processLimit(d.tm))

	d.rec.mu.Lock()
	z := *d.rec.az
	d.rec.mu.Unlock()
	var b strings.Builder
	row := func(k, format string, args ...any) { fmt.Fprintf(&b, "  %-34s %s\n", k, fmt.Sprintf(format, args...)) }
	errs := 0
	var kinds []string
	for k, c := range z.errors {
		errs += c
		kinds = append(kinds, fmt.Sprintf("%s: %d", k, c))
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "\n=== authorizer figures (%d authorizers, %d leader kills)\n", n, killed)
	row("leader kills", "%d in %s", killed, lastKill.Sub(killsFrom).Round(100*time.Millisecond))
	row("authorizer reads", "%d", z.reads)
	row("authorizer read errors", "%d %v", errs, kinds)
	row("reads of a dead authorizer token", "%d (longest %s after its death)", z.dead+z.unknown, z.late.Round(time.Millisecond))
	row("... dead for more than "+propagation.String(), "%d (target 0)", z.invalid+z.unknown)
	row("authorizer tokens seen", "%d new in the window", z.newToks)
	row("refresh answers lost with a leader", "at least %d, for %d authorizers (each rotated the refresh token)", lostAnswers, len(lostFor))
	row("api_authorizer_token calls", "%d", sum(callsEnd[apiAuthorizer])-sum(callsAt[apiAuthorizer]))
	row("answers 61023 (retired refresh token)", "%d", answeredEnd["61023"]-answeredAt["61023"])
	row("api_get_authorizer_list calls", "%d", sum(callsEnd[apiListing])-sum(callsAt[apiListing]))
	row("states at the end", "%v; sources %v", states, sources)
	row("all refreshed after the last kill", "in %s", refreshedIn.Round(100*time.Millisecond))
	row("export = simulator's refresh token", "%d of %d", n-len(mismatch), n)
	t.Log(b.String())

	f.check(t)
	if len(list) != n {
		t.Errorf("%d authorizers listed; want %d", len(list), n)
	}
	if len(mismatch) > 0 {
		t.Errorf("Redis holds a refresh token other than WeChat's current one for %d authorizers: %v", len(mismatch), mismatch)
	}
	if z.invalid+z.unknown > 0 {
		t.Errorf("%d reads of an authorizer token dead for more than %s:\n%s", z.invalid+z.unknown, propagation, strings.Join(z.log, "\n"))
	}
	for k := range z.errors {
		if strings.HasPrefix(k, "409") || strings.HasPrefix(k, "410") || strings.HasPrefix(k, "404") {
			t.Errorf("authorizer reads answered %s: an authorizer was lost or needs re-authorization", k)
		}
	}
	if errs > 0 {
		t.Logf("authorizer read errors:\n%s", strings.Join(z.log, "\n"))
	}
	if lostAnswers == 0 {
		t.Error("no refresh answer was lost with a leader: the scenario did not happen")
	}
	if !z.measured || z.reads == 0 {
		t.Error("no authorizer read was measured")
	}
}

// heldAuthorizerAnswer makes the leader lose a refresh answer: the
// simulator holds the next api_authorizer_token call for 1 s; once it has
// arrived the leader is stopped, WeChat answers it (a new access token, the
// refresh token rotated, the one sent retired) into the stopped process,
// and the caller kills the leader: Redis keeps the retired refresh token
// and the access token that dies after the overlap. It returns the leader.
func heldAuthorizerAnswer(t *testing.T, d *deployment, ids []string) (*broker, []string) {
	t.Helper()
	mintedBy := func() map[string]int {
		_, _, tokens := d.sim.statsAll(t)
		return tokens
	}
	minted := func() int {
		m := mintedBy()
		n := 0
		for _, a := range ids {
			n += m[a]
		}
		return n
	}
	c, _ := d.sim.stats(t)
	calls := sum(c[apiAuthorizer])
	d.sim.fault(t, apiAuthorizer, 1, map[string]any{"latency_ms": time.Second.Milliseconds()})
	waitFor(t, "an authorizer refresh held by the simulator", tokenTTL+5*time.Second, func() bool {
		c, _ := d.sim.stats(t)
		return sum(c[apiAuthorizer]) > calls
	})
	l := d.leader(time.Second)
	d.stop(l)
	// Whatever WeChat mints from now on (the held call and any other in
	// flight) is answered to the stopped process: lost.
	was := mintedBy()
	before := 0
	for _, a := range ids {
		before += was[a]
	}
	waitFor(t, "WeChat to answer the held refresh", 5*time.Second, func() bool { return minted() > before })
	var lost []string
	now := mintedBy()
	for _, a := range ids {
		if now[a] > was[a] {
			lost = append(lost, a)
		}
	}
	return l, lost
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
