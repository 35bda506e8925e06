package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat"
)

// RedisClient is every Redis command the broker sends, and nothing more
// (bsm/redislock's RedisClient is the model): New and Inspect take it. Any
// go-redis client satisfies it: *redis.Client (single node, Sentinel),
// *redis.ClusterClient and redis.UniversalClient. Implementations must be
// safe for concurrent use.
//
// Commands, by what they are for:
//   - EVALSHA / EVAL (redis.Scripter): the leader lock (redislock), the
//     fenced record and status writes, the pre-call count with its intent,
//     clearing an intent and taking an epoch; the scripts themselves call
//     GET, SET, INCR, EXPIRE, HGET, HSET, HDEL, HEXISTS, TIME and PUBLISH;
//   - GET (pipelined): lock holder, epoch, quota counters, issued tokens;
//   - HGET: one record; HGETALL (pipelined): records, statuses, intents;
//   - PTTL: when the current leader's lock expires;
//   - WAIT: a new leader's lock and epoch reach a replica (Sentinel);
//   - PUBLISH, SUBSCRIBE: record events and invalidation requests/answers.
//
// Cluster: every key and channel name starts with the hash tag {prefix}
// (see keys), so all of them live in one slot and every script's keys are
// on one node, as EVAL requires under Cluster.
type RedisClient interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	HGet(ctx context.Context, key, field string) *redis.StringCmd
	PTTL(ctx context.Context, key string) *redis.DurationCmd
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
	Pipeline() redis.Pipeliner
	Do(ctx context.Context, args ...any) *redis.Cmd
}

var (
	_ RedisClient           = (*redis.Client)(nil)
	_ RedisClient           = (*redis.ClusterClient)(nil)
	_ RedisClient           = redis.UniversalClient(nil)
	_ redislock.RedisClient = RedisClient(nil)
)

// store is the broker's shared state in Redis: key names, the record codec,
// the fenced scripts, the epoch, snapshots and the pub/sub channels. It
// knows nothing of terms, schedules or the cache; the Broker decides what to
// write, the store how it is laid out and fenced.
type store struct {
	rdb        RedisClient
	keys       keys
	scripts    scripts
	ops        opScripts
	namespaces atomic.Pointer[[]string] // configured namespaces, in config order (a reload changes them)
	// observe is told every command's outcome (Broker.setRedis); nil: none.
	observe func(error)
}

func newStore(rdb RedisClient, prefix string, namespaces []string, observe func(error)) *store {
	if observe == nil {
		observe = func(error) {}
	}
	s := &store{rdb: rdb, keys: newKeys(prefix), scripts: newScripts(), ops: newOpScripts(), observe: observe}
	s.setNamespaces(namespaces)
	return s
}

// setNamespaces replaces the namespaces whole-state reads cover.
func (s *store) setNamespaces(ns []string) { s.namespaces.Store(&ns) }

func (s *store) nsList() []string { return *s.namespaces.Load() }

// runFenced runs a fenced script and returns its three numbers.
func (s *store) runFenced(ctx context.Context, sc *redis.Script, f fence, keys []string, args ...any) ([3]int64, error) {
	var out [3]int64
	all := append([]any{f.lockValue, f.epoch}, args...)
	res, err := sc.Run(ctx, s.rdb, keys, all...).Result()
	s.observe(err)
	if err != nil {
		return out, err
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 3 {
		return out, fmt.Errorf("unexpected script reply %T", res)
	}
	for i, v := range vals {
		n, ok := v.(int64)
		if !ok {
			return out, fmt.Errorf("unexpected script reply element %T", v)
		}
		out[i] = n
	}
	if out[0] == -1 {
		return out, errFenced
	}
	return out, nil
}

// recordWrite is one fenced record write.
type recordWrite struct {
	ns, field string
	value     string
	exp, at   time.Time
	src       string
	sameValue bool   // keeps the generation (same value, other expiry)
	curGen    int64  // generation the leader knows: a Redis that lost its data does not restart the count
	settles   string // intent field removed in the same script ("": none)
	issuedTTL string // access tokens: TTL (ms) of the issued-token entry ("0": none); "": not an access token
	sealed    string // authorizers: the sealed refresh token stored with the value
	az        *azWrite
}

// azWrite is the registry entry an authorizer's record write also replaces,
// if the entry still has seq expected (store_platform.go).
type azWrite struct {
	comp, authorizer string
	expected         string
	entry            azEntry
}

// writeRecord stores a record under fence f, assigning its revision and
// generation, and publishes it on the events channel. It returns the record
// as stored.
func (s *store) writeRecord(ctx context.Context, f fence, w recordWrite) (*record, error) {
	same := "0"
	if w.sameValue {
		same = "1"
	}
	keys := []string{s.keys.lock(), s.keys.epoch(), s.keys.tok(w.ns), s.keys.rev(), s.keys.intent(w.ns)}
	args := []any{w.ns, w.field, w.curGen, same, recordTail(w.value, w.exp, w.at, w.src), s.keys.events(), w.settles}
	if w.sealed != "" {
		args[4] = args[4].(string) + "\t" + w.sealed
	}
	if w.issuedTTL != "" || w.az != nil {
		ttl := w.issuedTTL
		if ttl == "" {
			ttl = "0"
		}
		keys = append(keys, s.keys.issued(w.ns, w.value))
		args = append(args, ttl, strconv.FormatInt(w.exp.UnixMilli(), 10))
	}
	if w.az != nil {
		keys = append(keys, s.keys.opAuth(w.ns, w.az.comp))
		args = append(args, w.az.authorizer, w.az.expected, w.az.entry.encode(), s.keys.opChannel(),
			opPayload(w.ns, w.az.comp, w.az.authorizer))
	}
	out, err := s.runFenced(ctx, s.scripts.writeRecord, f, keys, args...)
	if err != nil {
		return nil, err
	}
	return &record{Rev: out[2], Gen: out[1], Value: w.value, ExpiresAt: w.exp.Truncate(time.Millisecond),
		FetchedAt: w.at.Truncate(time.Millisecond), Src: w.src, Sealed: w.sealed}, nil
}

// writeStatus stores an item's refresh status under fence f.
func (s *store) writeStatus(ctx context.Context, f fence, ns, field string, st *refreshStatus) error {
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	_, err = s.runFenced(ctx, s.scripts.writeStatus, f, []string{s.keys.lock(), s.keys.epoch(), s.keys.status(ns)}, field, string(js))
	return err
}

// preCallArgs is one credential call to count (see preCallLua).
type preCallArgs struct {
	ns, appid, api, day string
	mode                string        // callPlain, callForced, callForceCheck
	forceMinInterval    time.Duration // refresh.force_min_interval
	forceDailyCap       int           // refresh.force_daily_cap
	intentField         string        // "" records none
	intentValue         string
}

// preCallResult is what preCall counted.
type preCallResult struct {
	quota, forced int64
	// staleMarker: a force marker of another term whose call left no
	// outcome was ignored.
	staleMarker bool
}

// preCall counts a credential call under fence f and records its intent. It
// returns errForceInterval or errForceCap when the force budget refuses it.
func (s *store) preCall(ctx context.Context, f fence, a preCallArgs) (preCallResult, error) {
	out, err := s.runFenced(ctx, s.scripts.preCall, f,
		[]string{s.keys.lock(), s.keys.epoch(), s.keys.quota(a.ns, a.appid, a.api, a.day),
			s.keys.forceLast(a.ns, a.appid), s.keys.force(a.ns, a.appid, a.day), s.keys.intent(a.ns)},
		int64(counterTTL/time.Second), a.mode, a.forceMinInterval.Milliseconds(), a.forceDailyCap,
		a.intentField, a.intentValue)
	switch {
	case err != nil:
		return preCallResult{}, err
	case out[0] == -2:
		return preCallResult{}, errForceInterval
	case out[0] == -3:
		return preCallResult{}, errForceCap
	}
	return preCallResult{quota: out[1], forced: out[2], staleMarker: out[0] == 1}, nil
}

// clearIntent removes the intent of appid in ns if the term of fence f
// recorded it.
func (s *store) clearIntent(ctx context.Context, f fence, ns, appid string) error {
	_, err := s.runFenced(ctx, s.scripts.clearIntent, f,
		[]string{s.keys.lock(), s.keys.epoch(), s.keys.intent(ns)}, appid, f.epoch+"\t")
	return err
}

// intents reads every namespace's recorded credential calls: namespace →
// appid → raw intent.
func (s *store) intents(ctx context.Context) (map[string]map[string]string, error) {
	return s.hashes(ctx, s.keys.intent)
}

// records reads every namespace's records (one HGETALL each, pipelined):
// namespace → field → raw record. It is the snapshot a reconcile applies.
func (s *store) records(ctx context.Context) (map[string]map[string]string, error) {
	return s.hashes(ctx, s.keys.tok)
}

func (s *store) hashes(ctx context.Context, key func(ns string) string) (map[string]map[string]string, error) {
	pipe := s.rdb.Pipeline()
	nss := s.nsList()
	cmds := make(map[string]*redis.MapStringStringCmd, len(nss))
	for _, ns := range nss {
		cmds[ns] = pipe.HGetAll(ctx, key(ns))
	}
	_, err := pipe.Exec(ctx)
	s.observe(err)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[string]string, len(cmds))
	for ns, cmd := range cmds {
		out[ns] = cmd.Val()
	}
	return out, nil
}

// record reads one stored record; ok is false when there is none.
func (s *store) record(ctx context.Context, ns, field string) (raw string, ok bool, err error) {
	raw, err = s.rdb.HGet(ctx, s.keys.tok(ns), field).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	s.observe(err)
	if err != nil {
		return "", false, err
	}
	return raw, true, nil
}

// takeEpoch increments the epoch for the term whose lock value is
// lockValue, moving it past known (see takeEpochLua). moved reports that
// Redis handed out an epoch not above known.
func (s *store) takeEpoch(ctx context.Context, lockValue string, known int64) (epoch int64, moved bool, err error) {
	res, err := s.scripts.takeEpoch.Run(ctx, s.rdb, []string{s.keys.lock(), s.keys.epoch()}, lockValue, known).Int64Slice()
	s.observe(err)
	if err != nil {
		return 0, false, err
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("unexpected script reply of %d elements", len(res))
	}
	if res[0] < 0 {
		return 0, false, errFenced
	}
	return res[0], res[1] == 1, nil
}

// epochMissing reports whether the epoch key is absent (Redis lost its data).
func (s *store) epochMissing(ctx context.Context) (bool, error) {
	err := s.rdb.Get(ctx, s.keys.epoch()).Err()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	return false, err
}

// obtainLock tries once to take the leader lock for instance id.
func (s *store) obtainLock(ctx context.Context, id string, ttl time.Duration) (*redislock.Lock, error) {
	return redislock.Obtain(ctx, s.rdb, s.keys.lock(), ttl,
		&redislock.Options{Metadata: "|" + id, RetryStrategy: redislock.NoRetry()})
}

// renewLock extends lock to ttl; retries (nil: none) bounds its attempts.
// It fails with redislock.ErrNotObtained once the lock is no longer ours.
func (s *store) renewLock(ctx context.Context, lock *redislock.Lock, ttl time.Duration, retries redislock.RetryStrategy) error {
	var opts *redislock.Options
	if retries != nil {
		opts = &redislock.Options{RetryStrategy: retries}
	}
	return lock.Refresh(ctx, ttl, opts)
}

// releaseLock releases lock if it is still ours.
func (s *store) releaseLock(ctx context.Context, lock *redislock.Lock) error {
	return lock.Release(ctx)
}

// lockTTL is how long the current lock holder's lock has left (<= 0: none).
func (s *store) lockTTL(ctx context.Context) (time.Duration, error) {
	return s.rdb.PTTL(ctx, s.keys.lock()).Result()
}

// waitReplica waits briefly for a replica to acknowledge the writes so far
// (Sentinel); on a single node WAIT answers 0 after the timeout.
func (s *store) waitReplica(ctx context.Context) {
	_ = s.rdb.Do(ctx, "WAIT", 1, 100).Err()
}

// readLeader reads the lock holder's instance id and the current epoch (0:
// no epoch key).
func (s *store) readLeader(ctx context.Context) (string, int64, error) {
	pipe := s.rdb.Pipeline()
	lock := pipe.Get(ctx, s.keys.lock())
	epoch := pipe.Get(ctx, s.keys.epoch())
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", 0, err
	}
	e, _ := strconv.ParseInt(epoch.Val(), 10, 64)
	return leaderFromLock(lock.Val()), e, nil
}

// leaderFromLock extracts the instance id from a lock value (token|id).
func leaderFromLock(v string) string {
	_, id, _ := strings.Cut(v, "|")
	return id
}

// channel names a pub/sub channel of the broker.
type channel int

// The broker's channels.
const (
	chanNone      channel = iota
	chanEvents            // records the leader wrote
	chanInval             // reports forwarded to the leader
	chanInvalDone         // the leader's outcome of a forwarded report
	chanResume            // resume requests for the leader
	chanPlatform          // Open Platform registry and ticket changes
)

// channel is the Redis name of c.
func (k keys) channel(c channel) string {
	switch c {
	case chanEvents:
		return k.events()
	case chanInval:
		return k.inval()
	case chanInvalDone:
		return k.invalDone()
	case chanResume:
		return k.resume()
	case chanPlatform:
		return k.opChannel()
	}
	return ""
}

// channelOf is the channel a message arrived on (chanNone: not the broker's).
func (k keys) channelOf(name string) channel {
	for _, c := range []channel{chanEvents, chanInval, chanInvalDone, chanResume, chanPlatform} {
		if k.channel(c) == name {
			return c
		}
	}
	return chanNone
}

// channelOf is the channel a received message names (chanNone: none of
// the broker's).
func (s *store) channelOf(name string) channel { return s.keys.channelOf(name) }

// publish sends payload on channel c.
func (s *store) publish(ctx context.Context, c channel, payload string) error {
	err := s.rdb.Publish(ctx, s.keys.channel(c), payload).Err()
	s.observe(err)
	return err
}

// reloadClusterState asks a Redis Cluster client to reload its slot map
// (in the background, coalescing requests) and reports whether the client
// is one; other clients ignore it.
func (s *store) reloadClusterState() bool {
	r, ok := s.rdb.(stateReloader)
	if ok {
		r.ReloadState(context.Background())
	}
	return ok
}

// subscribe subscribes to the events, invalidation and resume channels.
func (s *store) subscribe(ctx context.Context) *redis.PubSub {
	return s.rdb.Subscribe(ctx, s.keys.events(), s.keys.inval(), s.keys.invalDone(), s.keys.resume(), s.keys.opChannel())
}

// lookupIssued reads the issued-token entry of tok in every namespace (one
// pipelined GET each: the token does not say its namespace). found is false
// when no namespace knows it; err is set only when none answered it.
func (s *store) lookupIssued(ctx context.Context, tok string) (ns, field string, exp time.Time, found bool, err error) {
	pipe := s.rdb.Pipeline()
	nss := s.nsList()
	cmds := make([]*redis.StringCmd, 0, len(nss))
	for _, ns := range nss {
		cmds = append(cmds, pipe.Get(ctx, s.keys.issued(ns, tok)))
	}
	_, _ = pipe.Exec(ctx) // each command's own error is looked at below
	raw := ""
	var lookupErr error
	for _, c := range cmds {
		v, err := c.Result()
		switch {
		case err == nil:
			raw = v
		case !errors.Is(err, redis.Nil):
			lookupErr = err
		}
	}
	if raw == "" && lookupErr != nil {
		s.observe(lookupErr)
		return "", "", time.Time{}, false, lookupErr
	}
	if raw == "" {
		return "", "", time.Time{}, false, nil
	}
	ns, rest, _ := strings.Cut(raw, "\t")
	field, expText, _ := strings.Cut(rest, "\t")
	expMs, perr := strconv.ParseInt(expText, 10, 64)
	if perr != nil {
		return "", "", time.Time{}, false, nil
	}
	return ns, field, time.UnixMilli(expMs), true, nil
}

// keys names every Redis key and channel; all share the hash tag {prefix}.
type keys struct{ p string }

func newKeys(prefix string) keys {
	if prefix == "" {
		prefix = "wxbroker"
	}
	return keys{p: "{" + prefix + "}"}
}

func (k keys) lock() string      { return k.p + ":lock" }
func (k keys) epoch() string     { return k.p + ":epoch" }
func (k keys) rev() string       { return k.p + ":rev" }
func (k keys) events() string    { return k.p + ":events" }
func (k keys) inval() string     { return k.p + ":inval" }
func (k keys) invalDone() string { return k.p + ":inval:done" }
func (k keys) resume() string    { return k.p + ":resume" }

func (k keys) tok(ns string) string    { return k.p + ":ns:" + ns + ":tok" }
func (k keys) status(ns string) string { return k.p + ":ns:" + ns + ":st" }
func (k keys) quota(ns, appid, api, day string) string {
	return k.p + ":ns:" + ns + ":quota:" + appid + ":" + api + ":" + day
}
func (k keys) force(ns, appid, day string) string {
	return k.p + ":ns:" + ns + ":force:" + appid + ":" + day
}
func (k keys) forceLast(ns, appid string) string { return k.p + ":ns:" + ns + ":forcelast:" + appid }
func (k keys) intent(ns string) string           { return k.p + ":ns:" + ns + ":intent" }

// record is one stored credential. Records are immutable once built.
type record struct {
	Rev       int64 // Redis write revision: orders updates across pub/sub and reconcile
	Gen       int64 // grows with every new value
	Value     string
	ExpiresAt time.Time
	FetchedAt time.Time
	Src       string // tickets: short hash of the access token they were fetched with
	// Sealed is an authorizer's refresh token, encrypted (sealer), written
	// with the access token it came with; "" for other kinds.
	Sealed string
}

// recordTail encodes the part of a record the leader supplies; the fenced
// write script prefixes "rev\tgen\t".
func recordTail(value string, exp, at time.Time, src string) string {
	return value + "\t" + strconv.FormatInt(exp.UnixMilli(), 10) + "\t" + strconv.FormatInt(at.UnixMilli(), 10) + "\t" + src
}

func parseRecord(s string) (*record, error) {
	f := strings.Split(s, "\t")
	if len(f) != 6 && len(f) != 7 {
		return nil, fmt.Errorf("malformed record: %d fields", len(f))
	}
	var n [4]int64
	for i, j := range []int{0, 1, 3, 4} {
		v, err := strconv.ParseInt(f[j], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed record field %d: %w", j, err)
		}
		n[i] = v
	}
	r := &record{
		Rev: n[0], Gen: n[1], Value: f[2],
		ExpiresAt: time.UnixMilli(n[2]), FetchedAt: time.UnixMilli(n[3]), Src: f[5],
	}
	if len(f) == 7 {
		r.Sealed = f[6]
	}
	return r, nil
}

// shortHash identifies a token in logs and ticket records without revealing it.
func shortHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:6])
}

// validValue reports whether a token or ticket can be stored: non-empty and
// free of the record separator.
func validValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "\t\r\n")
}

func (k keys) issued(ns, token string) string {
	sum := sha256.Sum256([]byte(token))
	return k.p + ":ns:" + ns + ":issued:" + hex.EncodeToString(sum[:])
}

// snapshot is the shared state read from Redis in one pipeline.
type snapshot struct {
	leader  string
	epoch   int64
	records map[string]map[string]*record        // ns → field → record
	status  map[string]map[string]*refreshStatus // ns → field → status
	quota   map[string]map[string]int64          // ns/appid → api → calls today
	forced  map[string]int64                     // ns/appid → forced refreshes today
}

// gather reads the shared state an operator sees: leader, epoch, records,
// statuses and today's counters.
func (s *store) gather(ctx context.Context, cfg *config.Config, now time.Time) (*snapshot, error) {
	k := s.keys
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := day(now)
	pipe := s.rdb.Pipeline()
	lock := pipe.Get(ctx, k.lock())
	epoch := pipe.Get(ctx, k.epoch())
	toks := map[string]*redis.MapStringStringCmd{}
	sts := map[string]*redis.MapStringStringCmd{}
	type counter struct {
		app, api string
		cmd      *redis.StringCmd
	}
	var counters []counter
	for _, ns := range cfg.NamespaceNames() {
		n := cfg.Namespaces[ns]
		if n == nil {
			continue
		}
		toks[ns] = pipe.HGetAll(ctx, k.tok(ns))
		sts[ns] = pipe.HGetAll(ctx, k.status(ns))
		for _, a := range n.Apps {
			if a == nil {
				continue
			}
			for _, api := range quotaAPIs() {
				counters = append(counters, counter{ns + "/" + a.AppID, api, pipe.Get(ctx, k.quota(ns, a.AppID, api, d))})
			}
			counters = append(counters, counter{ns + "/" + a.AppID, "", pipe.Get(ctx, k.force(ns, a.AppID, d))})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read broker state: %w", err)
	}
	snap := &snapshot{
		leader:  leaderFromLock(lock.Val()),
		records: map[string]map[string]*record{},
		status:  map[string]map[string]*refreshStatus{},
		quota:   map[string]map[string]int64{},
		forced:  map[string]int64{},
	}
	snap.epoch, _ = strconv.ParseInt(epoch.Val(), 10, 64)
	for ns, cmd := range toks {
		snap.records[ns] = map[string]*record{}
		for f, raw := range cmd.Val() {
			if r, err := parseRecord(raw); err == nil {
				snap.records[ns][f] = r
			}
		}
	}
	for ns, cmd := range sts {
		snap.status[ns] = map[string]*refreshStatus{}
		for f, raw := range cmd.Val() {
			var rs refreshStatus
			if json.Unmarshal([]byte(raw), &rs) == nil {
				snap.status[ns][f] = &rs
			}
		}
	}
	for _, c := range counters {
		n, _ := strconv.ParseInt(c.cmd.Val(), 10, 64)
		if c.api == "" {
			snap.forced[c.app] = n
			continue
		}
		if snap.quota[c.app] == nil {
			snap.quota[c.app] = map[string]int64{}
		}
		if n > 0 {
			snap.quota[c.app][c.api] = n
		}
	}
	return snap, nil
}

// stateReloader is what *redis.ClusterClient offers to refresh its slot map.
// Without it the client keeps routing the broker's hash slot to a master
// that died until its periodic reload (a minute), so a cluster failover would
// leave the broker without a leader that long instead of the cluster's
// node-timeout plus lock_ttl.
type stateReloader interface {
	ReloadState(ctx context.Context)
}

var _ stateReloader = (*redis.ClusterClient)(nil)

// ErrorInfo is the last refresh error of a credential.
type ErrorInfo struct {
	At        time.Time `json:"at"`
	API       string    `json:"api,omitempty"`
	Errcode   int       `json:"errcode,omitempty"`   // WeChat's errcode; 0 for transport failures
	Transport string    `json:"transport,omitempty"` // kind of transport failure
	Message   string    `json:"message"`
	RID       string    `json:"rid,omitempty"` // for getRidInfo
	Hint      *HintInfo `json:"hint,omitempty"`
}

// HintInfo explains an errcode (from wechat.Explain).
type HintInfo struct {
	Title string `json:"title"`
	EN    string `json:"en"`
	ZH    string `json:"zh"`
	FixEN string `json:"fix_en"`
	FixZH string `json:"fix_zh"`
}

// refreshStatus is what the leader stores per item in {p}:ns:<ns>:st.
type refreshStatus struct {
	LastRefresh    time.Time  `json:"last_refresh,omitzero"`
	LastError      *ErrorInfo `json:"last_error,omitempty"`
	RetriesStopped bool       `json:"retries_stopped,omitempty"`
	NextAttempt    time.Time  `json:"next_attempt,omitzero"`
}

// issuedKeep is how long Redis keeps an issued-token entry after the
// token's expiry (clock differences between replicas); the entry carries
// the expiry itself, which is what lookups check.
const issuedKeep = time.Minute

// issuedTTL is the TTL argument of the write script for a token expiring at
// exp, in milliseconds; "0" means the token is already dead: no entry.
func issuedTTL(exp, now time.Time) string {
	left := exp.Sub(now)
	if left <= 0 {
		return "0"
	}
	return strconv.FormatInt((left + issuedKeep).Milliseconds(), 10)
}

// counterTTL keeps day counters a little past their UTC+8 day.
const counterTTL = 48 * time.Hour

// quotaAPIs are the credential endpoints the broker calls.
func quotaAPIs() [3]string {
	return [3]string{wechat.APIToken, wechat.APIStableToken, wechat.APIGetTicket}
}

// day is the UTC+8 calendar day of t (WeChat resets quotas at its midnight).
func day(t time.Time) string {
	return t.UTC().Add(8 * time.Hour).Format("20060102")
}

// intent is a recorded credential call.
type intent struct {
	epoch int64
	start time.Time // when the call was counted, on the leader's clock
	mode  string
}

func intentValue(epoch string, start time.Time, mode string) string {
	return epoch + "\t" + strconv.FormatInt(start.UnixMilli(), 10) + "\t" + mode
}

func parseIntent(s string) (intent, error) {
	f := strings.Split(s, "\t")
	if len(f) != 3 {
		return intent{}, fmt.Errorf("malformed intent: %d fields", len(f))
	}
	e, err1 := strconv.ParseInt(f[0], 10, 64)
	ms, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return intent{}, fmt.Errorf("malformed intent: %w", err)
	}
	return intent{epoch: e, start: time.UnixMilli(ms), mode: f[2]}, nil
}

// Outcomes of the fenced scripts.
var (
	// ErrForceLimited is returned when the forced refresh budget is used
	// (force_min_interval or force_daily_cap): → 429.
	ErrForceLimited  = errors.New("broker: forced refresh budget used")
	errFenced        = errors.New("broker: fenced: lock or epoch changed hands")
	errForceInterval = fmt.Errorf("%w: force_min_interval not elapsed", ErrForceLimited)
	errForceCap      = fmt.Errorf("%w: force_daily_cap reached", ErrForceLimited)
)

// fence identifies the leadership a write belongs to.
type fence struct {
	lockValue string
	epoch     string
}

func epochString(e int64) string { return strconv.FormatInt(e, 10) }
