package broker

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Open Platform's keys (docs/ARCHITECTURE.md, "Open Platform"), all
// under the broker's hash tag, per namespace and component c:
//
//	{p}:ns:<ns>:op:<c>:az      hash authorizer → registry entry (azEntry)
//	{p}:ns:<ns>:op:<c>:azseq   counter of registry changes made outside a term
//	{p}:ns:<ns>:op:<c>:ticket  "createTimeMs\tticket", the latest verify ticket (PX 12 h)
//	{p}:ns:<ns>:op:<c>:push    api_start_push_ticket rate limit (PX)
//	{p}:ns:<ns>:op:<c>:seen:<key>  the event receiver's replay store (PX)
//
// The tokens themselves are records in {p}:ns:<ns>:tok like every other
// credential: "<c>/component_access_token" and
// "<c>/<authorizer>/authorizer_access_token"; an authorizer's record also
// carries its refresh token, sealed (record.Sealed), so the two are written
// in one fenced script. Registry changes are announced on {p}:op
// ("ns\tc\tauthorizer", authorizer "" for a new ticket).

func (k keys) op(ns, comp string) string       { return k.p + ":ns:" + ns + ":op:" + comp }
func (k keys) opAuth(ns, comp string) string   { return k.op(ns, comp) + ":az" }
func (k keys) opSeq(ns, comp string) string    { return k.op(ns, comp) + ":azseq" }
func (k keys) opTicket(ns, comp string) string { return k.op(ns, comp) + ":ticket" }
func (k keys) opPush(ns, comp string) string   { return k.op(ns, comp) + ":push" }
func (k keys) opSeen(ns, comp, key string) string {
	return k.op(ns, comp) + ":seen:" + key
}
func (k keys) opChannel() string { return k.p + ":op" }

// authorizerAppID is the shape of an authorizer's appid.
var authorizerAppID = regexp.MustCompile(`^wx[0-9a-f]{16}$`)

// Authorizer states.
const (
	StateActive               = "active"
	StateNeedsReauthorization = "needs_reauthorization"
	StateRevoked              = "revoked"
)

// Authorizer sources.
const (
	SourceEvent     = "event"
	SourceImport    = "import"
	SourceRecovered = "recovered"
)

// Seed prefixes: what the next refresh of an authorizer starts from,
// instead of the refresh token of its record.
const (
	seedRefresh = "rt:"   // a sealed refresh token (import, recovery)
	seedCode    = "code:" // a sealed authorization code (authorized event)
)

// azEntry is one authorizer's registry entry. Seed, when set, is what its
// next refresh uses (sealed): a newer grant than the record's refresh
// token. Seq orders the entry's changes: a leader's write replaces an entry
// only if it still has the seq the leader read.
type azEntry struct {
	State        string
	Source       string
	AuthorizedAt time.Time
	Seq          string
	Seed         string
	LastError    string
}

func (e azEntry) encode() string {
	return e.State + "\t" + e.Source + "\t" + strconv.FormatInt(e.AuthorizedAt.UnixMilli(), 10) + "\t" +
		e.Seq + "\t" + e.Seed + "\t" + strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(e.LastError)
}

func parseAzEntry(s string) (azEntry, error) {
	f := strings.SplitN(s, "\t", 6)
	if len(f) != 6 {
		return azEntry{}, fmt.Errorf("malformed authorizer entry: %d fields", len(f))
	}
	ms, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return azEntry{}, fmt.Errorf("malformed authorizer entry: %w", err)
	}
	e := azEntry{State: f[0], Source: f[1], Seq: f[3], Seed: f[4], LastError: f[5]}
	if ms > 0 {
		e.AuthorizedAt = time.UnixMilli(ms)
	}
	return e, nil
}

// sealer encrypts refresh tokens at rest: AES-256-GCM, a random 12-byte
// nonce before the ciphertext, base64 (no tab, so it fits a record).
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, errors.New("refresh token key must be 32 bytes")
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("refresh token key: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("refresh token key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plain string) string {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24)
	out := s.aead.Seal(nonce, nonce, []byte(plain), nil)
	return base64.StdEncoding.EncodeToString(out)
}

// errUnsealable is a sealed value this key cannot open (another key, or
// damaged); the text never shows the value.
var errUnsealable = errors.New("cannot decrypt the stored refresh token (wrong open_platform.refresh_token_encryption_key, or damaged)")

func (s *sealer) open(sealed string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	n := s.aead.NonceSize()
	if err != nil || len(raw) < n {
		return "", errUnsealable
	}
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], nil)
	if err != nil {
		return "", errUnsealable
	}
	return string(plain), nil
}

// opGrantLua writes a registry entry outside a term (an event or an import
// on any replica) with a new seq, and announces it. KEYS[1] registry hash,
// KEYS[2] seq counter; ARGV[1] authorizer, ARGV[2] the entry without its
// seq: "state\tsource\tat\t" and "\tseed\terror" around it (ARGV[3]),
// ARGV[4] channel, ARGV[5] payload. Returns the seq.
const opGrantLua = `
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. string.format('%d', seq) .. ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return seq
`

// opStateLua replaces a registry entry under the fence if it still has the
// seq the leader read. KEYS[3] registry hash; ARGV[3] authorizer, ARGV[4]
// expected seq, ARGV[5] new entry, ARGV[6] channel, ARGV[7] payload.
// Returns {1, 1 when written, 0}.
const opStateLua = fenceLua + `
local cur = redis.call('HGET', KEYS[3], ARGV[3])
local seq = ''
if cur then seq = string.match(cur, '^[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t') or '' end
if seq ~= ARGV[4] then return {1, 0, 0} end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {1, 1, 0}
`

// opTicketLua stores a verify ticket unless a newer one (by CreateTime) is
// stored, and announces it. KEYS[1] ticket key; ARGV[1] create time (ms),
// ARGV[2] "ms\tticket", ARGV[3] TTL ms, ARGV[4] channel, ARGV[5] payload.
// Returns 1 when stored.
const opTicketLua = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms = tonumber(string.match(cur, '^(%d+)\t'))
  if ms and ms > tonumber(ARGV[1]) then return 0 end
  if cur == ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`

// opScripts are the Open Platform's scripts.
type opScripts struct{ grant, state, ticket *redis.Script }

func newOpScripts() opScripts {
	return opScripts{grant: redis.NewScript(opGrantLua), state: redis.NewScript(opStateLua), ticket: redis.NewScript(opTicketLua)}
}

// opStore is the store's Open Platform part (a type of its own: the store
// keeps to its room's method budget).
type opStore struct{ s *store }

// opStoreOf is s's Open Platform part.
func opStoreOf(s *store) opStore { return opStore{s: s} }

// opPayload is the {p}:op announcement of a change.
func opPayload(ns, comp, authorizer string) string { return ns + "\t" + comp + "\t" + authorizer }

// opGrant writes e (its Seq is assigned) for authorizer outside a term.
func (o opStore) opGrant(ctx context.Context, ns, comp, authorizer string, e azEntry) (string, error) {
	full := e.encode()
	parts := strings.SplitN(full, "\t", 6)
	head := parts[0] + "\t" + parts[1] + "\t" + parts[2] + "\t"
	tail := "\t" + parts[4] + "\t" + parts[5]
	seq, err := o.s.ops.grant.Run(ctx, o.s.rdb, []string{o.s.keys.opAuth(ns, comp), o.s.keys.opSeq(ns, comp)},
		authorizer, head, tail, o.s.keys.opChannel(), opPayload(ns, comp, authorizer)).Int64()
	o.s.observe(err)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(seq, 10), nil
}

// opGrants writes entries (authorizer → entry, Seq assigned) outside a
// term, pipelined: an import of thousands is a few round trips.
func (o opStore) opGrants(ctx context.Context, ns, comp string, entries map[string]azEntry) error {
	keys := []string{o.s.keys.opAuth(ns, comp), o.s.keys.opSeq(ns, comp)}
	const batch = 500
	pipe := o.s.rdb.Pipeline()
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		o.s.observe(err)
		n = 0
		return err
	}
	for a, e := range entries {
		parts := strings.SplitN(e.encode(), "\t", 6)
		pipe.Eval(ctx, opGrantLua, keys, a, parts[0]+"\t"+parts[1]+"\t"+parts[2]+"\t", "\t"+parts[4]+"\t"+parts[5],
			o.s.keys.opChannel(), opPayload(ns, comp, a))
		if n++; n == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// opSetState replaces authorizer's entry under fence f if its seq is still
// expected; written reports whether it was.
func (o opStore) opSetState(ctx context.Context, f fence, ns, comp, authorizer, expected string, e azEntry) (bool, error) {
	out, err := o.s.runFenced(ctx, o.s.ops.state, f, []string{o.s.keys.lock(), o.s.keys.epoch(), o.s.keys.opAuth(ns, comp)},
		authorizer, expected, e.encode(), o.s.keys.opChannel(), opPayload(ns, comp, authorizer))
	if err != nil {
		return false, err
	}
	return out[1] == 1, nil
}

// opAuthorizers reads one component's registry: authorizer → raw entry.
func (o opStore) opAuthorizers(ctx context.Context, ns, comp string) (map[string]string, error) {
	pipe := o.s.rdb.Pipeline()
	cmd := pipe.HGetAll(ctx, o.s.keys.opAuth(ns, comp))
	_, err := pipe.Exec(ctx)
	o.s.observe(err)
	if err != nil {
		return nil, err
	}
	return cmd.Val(), nil
}

// opAuthorizersOf reads the registry entries of ids (HMGET, pipelined):
// authorizer → raw entry, absent for one without an entry.
func (o opStore) opAuthorizersOf(ctx context.Context, ns, comp string, ids []string) (map[string]string, error) {
	const chunk = 1000
	pipe := o.s.rdb.Pipeline()
	var cmds []*redis.SliceCmd
	for i := 0; i < len(ids); i += chunk {
		cmds = append(cmds, pipe.HMGet(ctx, o.s.keys.opAuth(ns, comp), ids[i:min(i+chunk, len(ids))]...))
	}
	if len(cmds) == 0 {
		return map[string]string{}, nil
	}
	_, err := pipe.Exec(ctx)
	o.s.observe(err)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ids))
	for i, cmd := range cmds {
		for j, v := range cmd.Val() {
			if sv, ok := v.(string); ok {
				out[ids[i*chunk+j]] = sv
			}
		}
	}
	return out, nil
}

// opAuthorizer reads one registry entry; ok is false when there is none.
func (o opStore) opAuthorizer(ctx context.Context, ns, comp, authorizer string) (azEntry, bool, error) {
	raw, err := o.s.rdb.HGet(ctx, o.s.keys.opAuth(ns, comp), authorizer).Result()
	if errors.Is(err, redis.Nil) {
		return azEntry{}, false, nil
	}
	o.s.observe(err)
	if err != nil {
		return azEntry{}, false, err
	}
	e, err := parseAzEntry(raw)
	return e, err == nil, err
}

// verifyTicketTTL is how long WeChat accepts a verify ticket.
const verifyTicketTTL = 12 * time.Hour

// opStoreTicket stores a verify ticket created at created unless a newer one
// is stored; stored reports whether it was.
func (o opStore) opStoreTicket(ctx context.Context, ns, comp, ticket string, created time.Time) (bool, error) {
	ms := strconv.FormatInt(created.UnixMilli(), 10)
	ttl := time.Until(created.Add(verifyTicketTTL))
	if ttl <= 0 {
		return false, nil
	}
	n, err := o.s.ops.ticket.Run(ctx, o.s.rdb, []string{o.s.keys.opTicket(ns, comp)}, ms, ms+"\t"+ticket,
		ttl.Milliseconds(), o.s.keys.opChannel(), opPayload(ns, comp, "")).Int64()
	o.s.observe(err)
	return n == 1, err
}

// opTicket reads the stored verify ticket and its create time; ok false:
// none.
func (o opStore) opTicket(ctx context.Context, ns, comp string) (ticket string, created time.Time, ok bool, err error) {
	raw, err := o.s.rdb.Get(ctx, o.s.keys.opTicket(ns, comp)).Result()
	if errors.Is(err, redis.Nil) {
		return "", time.Time{}, false, nil
	}
	o.s.observe(err)
	if err != nil {
		return "", time.Time{}, false, err
	}
	msText, tk, found := strings.Cut(raw, "\t")
	ms, perr := strconv.ParseInt(msText, 10, 64)
	if !found || perr != nil || tk == "" {
		return "", time.Time{}, false, nil
	}
	return tk, time.UnixMilli(ms), true, nil
}

// opFirst sets key (SET NX PX ttl) and reports whether it was not set yet.
func (o opStore) opFirst(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	res, err := o.s.rdb.Do(ctx, "SET", key, "1", "NX", "PX", max(ttl.Milliseconds(), 1)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	o.s.observe(err)
	if err != nil {
		return false, err
	}
	return res == "OK", nil
}

// opPersistence reports whether Redis keeps its data across a restart
// (appendonly yes, or a save schedule); known is false when CONFIG GET is
// refused (managed Redis).
func (o opStore) opPersistence(ctx context.Context) (persistent, known bool) {
	aof, ok1 := o.configValue(ctx, "appendonly")
	save, ok2 := o.configValue(ctx, "save")
	if !ok1 || !ok2 {
		return false, false
	}
	return aof == "yes" || strings.TrimSpace(save) != "", true
}

// configValue is CONFIG GET name, answered as a list (RESP2) or a map
// (RESP3).
func (o opStore) configValue(ctx context.Context, name string) (string, bool) {
	res, err := o.s.rdb.Do(ctx, "CONFIG", "GET", name).Result()
	if err != nil {
		return "", false
	}
	switch v := res.(type) {
	case []any:
		if len(v) == 2 {
			s, ok := v[1].(string)
			return s, ok
		}
	case map[any]any:
		s, ok := v[name].(string)
		return s, ok
	}
	return "", false
}
