package login

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is every Redis command login sends, and nothing more. Any go-redis
// client satisfies it: *redis.Client (single node, Sentinel, miniredis in dev
// mode) and *redis.ClusterClient.
//
// Commands, by what they are for:
//   - EVALSHA / EVAL (redis.Scripter): resolving a user (GET, INCR, SET),
//     rotating a refresh family (EXISTS, HGET, HSET, PEXPIRE, SET) and
//     revoking one (EXISTS, HSET);
//   - MULTI/EXEC (TxPipelined): a new family with its refresh-token key
//     (HSET, PEXPIRE, SET), a user's fields (HSETNX, HSET, HGETALL), a public
//     id (HSETNX, HGET), a revocation with its denylist entry (EVAL, SET);
//   - a pipeline (Pipelined): every authenticated request's denylist and
//     family check (EXISTS, HMGET);
//   - GET: a refresh token's family, a web session's user; GETDEL: an OAuth
//     state stored before states were sealed; SET NX: an OAuth state's
//     used marker; SET, DEL: web sessions; HGETALL: a user; HMGET: a
//     family's user; HSET: one user field.
//
// Cluster: every key starts with the hash tag {redis.key_prefix}, so all of
// them live in one slot, as the scripts and transactions require.
type Redis interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	GetDel(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	HMGet(ctx context.Context, key string, fields ...string) *redis.SliceCmd
	HSet(ctx context.Context, key string, values ...any) *redis.IntCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

var (
	_ Redis = (*redis.Client)(nil)
	_ Redis = (*redis.ClusterClient)(nil)
	_ Redis = redis.UniversalClient(nil)
)

// store is login's state in Redis: every key and every script login uses,
// and nothing else in the package touches Redis. It stores what it is given
// (values to keep secret arrive sealed) and keys bearer secrets (refresh
// tokens, web session ids, OAuth state ids) by their SHA-256 only: the
// secrets themselves never reach Redis. It knows nothing of JWTs, sealing,
// WeChat or HTTP.
type store struct {
	rdb     Redis
	keys    keys
	scripts storeScripts
}

func newStore(rdb Redis, prefix string) *store {
	return &store{rdb: rdb, keys: newKeys(prefix), scripts: newStoreScripts()}
}

// keys builds the Redis keys of the login state, all in one hash slot.
type keys struct{ p string }

func newKeys(prefix string) keys { return keys{p: "{" + prefix + "}:login:"} }

func (k keys) userSeq() string                    { return k.p + "user:seq" }
func (k keys) user(id string) string              { return k.p + "user:" + id }
func (k keys) openid(appid, openid string) string { return k.p + "openid:" + appid + ":" + openid }
func (k keys) unionid(unionid string) string      { return k.p + "unionid:" + unionid }
func (k keys) family(fid string) string           { return k.p + "family:" + fid }
func (k keys) refresh(hash string) string         { return k.p + "rt:" + hash }
func (k keys) deny(jti string) string             { return k.p + "deny:" + jti }
func (k keys) state(hash string) string           { return k.p + "state:" + hash }
func (k keys) stateUsed(hash string) string       { return k.p + "state-used:" + hash }
func (k keys) session(hash string) string         { return k.p + "session:" + hash }

// storeScripts are login's Lua scripts.
type storeScripts struct {
	resolve, rotate, revoke *redis.Script
}

func newStoreScripts() storeScripts {
	return storeScripts{
		resolve: redis.NewScript(resolveLua),
		rotate:  redis.NewScript(rotateLua),
		revoke:  redis.NewScript(revokeLua),
	}
}

// --- users ---

// A user is a Redis hash at login:user:<id> (fields: users.go);
// login:openid:<appid>:<openid> and login:unionid:<unionid> index it, and
// login:user:seq numbers users.

// resolveLua finds the user of an openid, else of the unionid, else creates
// one, and indexes the openid (and the unionid, first binding wins),
// atomically so that concurrent first logins make one user.
//
// KEYS: user seq, openid key, unionid key. ARGV: unionid ("" for none).
const resolveLua = `
local id = redis.call('GET', KEYS[2])
if not id and ARGV[1] ~= '' then id = redis.call('GET', KEYS[3]) end
local created = 0
if not id then
  id = tostring(redis.call('INCR', KEYS[1]))
  created = 1
end
redis.call('SET', KEYS[2], id)
if ARGV[1] ~= '' then redis.call('SET', KEYS[3], id, 'NX') end
return {id, created}
`

// resolveUser returns the internal id of the user of appid/openid, linked by
// unionid ("" for none), creating the user when neither is known.
func (s *store) resolveUser(ctx context.Context, appid, openid, unionid string) (uid string, created bool, err error) {
	res, err := s.scripts.resolve.Run(ctx, s.rdb,
		[]string{s.keys.userSeq(), s.keys.openid(appid, openid), s.keys.unionid(unionid)}, unionid).Slice()
	if err != nil {
		return "", false, fmt.Errorf("login: resolve user: %w", err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("login: resolve user: unexpected reply of %d elements", len(res))
	}
	uid, _ = res[0].(string)
	n, _ := res[1].(int64)
	if uid == "" {
		return "", false, errors.New("login: resolve user: empty user id")
	}
	return uid, n == 1, nil
}

// writeUser records a login of user uid at now (unix ms): created_at and
// public_id are set when the user has none, fields (name, value pairs) are
// set, and the user's fields as stored afterwards are returned.
func (s *store) writeUser(ctx context.Context, uid string, now int64, publicID string, fields ...string) (map[string]string, error) {
	key := s.keys.user(uid)
	ms := strconv.FormatInt(now, 10)
	vals := make([]any, 0, len(fields)+6)
	vals = append(vals, "id", uid, "updated_at", ms, "last_login_at", ms)
	for _, f := range fields {
		vals = append(vals, f)
	}
	var all *redis.MapStringStringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, key, "created_at", ms)
		p.HSetNX(ctx, key, fieldPublicID, publicID)
		p.HSet(ctx, key, vals...)
		all = p.HGetAll(ctx, key)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("login: store user: %w", err)
	}
	return all.Val(), nil
}

// user returns the fields of user uid; ok is false when there is no such user.
func (s *store) user(ctx context.Context, uid string) (fields map[string]string, ok bool, err error) {
	m, err := s.rdb.HGetAll(ctx, s.keys.user(uid)).Result()
	if err != nil {
		return nil, false, fmt.Errorf("login: load user: %w", err)
	}
	return m, len(m) > 0, nil
}

// setUserField sets one field of user uid and its updated_at (unix ms).
func (s *store) setUserField(ctx context.Context, uid, field, value string, now int64) error {
	err := s.rdb.HSet(ctx, s.keys.user(uid), field, value, "updated_at", strconv.FormatInt(now, 10)).Err()
	if err != nil {
		return fmt.Errorf("login: store user field: %w", err)
	}
	return nil
}

// assignPublicID gives user uid the public id candidate unless it has one
// (first writer wins across replicas) and returns the user's public id.
func (s *store) assignPublicID(ctx context.Context, uid, candidate string) (string, error) {
	key := s.keys.user(uid)
	var got *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, key, fieldPublicID, candidate)
		got = p.HGet(ctx, key, fieldPublicID)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("login: assign public user id: %w", err)
	}
	return got.Val(), nil
}

// --- refresh families ---

// A refresh family is a hash at login:family:<fid> with the fields user,
// sub, flow, cur_rt and prev_rt (refresh-token hashes), cur_jti and
// prev_jti, rotated_at and exp (unix ms), next (the sealed pair of the last
// rotation) and revoked ("0" or "1"). login:rt:<hash> names the family of a
// refresh token; login:deny:<jti> denylists a logged-out access token.

// newFamily is a family's first credential pair.
type newFamily struct {
	fid, uid, sub, flow string
	refreshToken        string // stored as its hash only
	jti                 string
	exp                 time.Time     // when the family ends unless rotated
	ttl                 time.Duration // how long Redis keeps it
}

// createFamily stores a new family and its refresh token's key.
func (s *store) createFamily(ctx context.Context, f newFamily) error {
	key := s.keys.family(f.fid)
	rt := digest(f.refreshToken)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "user", f.uid, "sub", f.sub, "flow", f.flow, "cur_rt", rt, "cur_jti", f.jti,
			"rotated_at", 0, "exp", f.exp.UnixMilli(), "revoked", "0")
		p.PExpire(ctx, key, f.ttl)
		p.Set(ctx, s.keys.refresh(rt), f.fid, f.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("login: store refresh family: %w", err)
	}
	return nil
}

// familyUser returns the user (internal id) and sub of family fid; uid is
// "" when the family is gone. sub is "" for a family from before public ids.
func (s *store) familyUser(ctx context.Context, fid string) (uid, sub string, err error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.family(fid), "user", "sub").Result()
	if err != nil {
		return "", "", fmt.Errorf("login: read refresh family: %w", err)
	}
	if len(vals) == 2 {
		uid, _ = vals[0].(string)
		sub, _ = vals[1].(string)
	}
	return uid, sub, nil
}

// familyOf names the family of a refresh token; ok is false when the token
// is unknown or expired.
func (s *store) familyOf(ctx context.Context, refreshToken string) (fid string, ok bool, err error) {
	fid, err = s.rdb.Get(ctx, s.keys.refresh(digest(refreshToken))).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("login: read refresh token: %w", err)
	}
	return fid, true, nil
}

// rotateLua rotates a family when the presented credential (a refresh
// token hash, or an access token jti) is the current one; answers the pair
// minted by the last rotation when it is the previous one and the rotation
// is recent (concurrent retries); otherwise it is a replay of a rotated
// credential: the whole family is revoked.
//
// KEYS: family, new refresh key. ARGV: kind (rt|jti), value, now ms, grace ms,
// new rt hash, new jti, sealed new pair, new exp ms, ttl ms, family id.
const rotateLua = `
local f = KEYS[1]
if redis.call('EXISTS', f) == 0 then return {'missing'} end
if redis.call('HGET', f, 'revoked') == '1' then return {'revoked'} end
local now = tonumber(ARGV[3])
if redis.call('HGET', f, 'cur_' .. ARGV[1]) == ARGV[2] then
  if tonumber(redis.call('HGET', f, 'exp')) <= now then return {'expired'} end
  local rt = redis.call('HGET', f, 'cur_rt')
  local jti = redis.call('HGET', f, 'cur_jti')
  redis.call('HSET', f, 'prev_rt', rt, 'prev_jti', jti, 'cur_rt', ARGV[5], 'cur_jti', ARGV[6],
    'rotated_at', ARGV[3], 'next', ARGV[7], 'exp', ARGV[8])
  redis.call('PEXPIRE', f, ARGV[9])
  redis.call('SET', KEYS[2], ARGV[10], 'PX', ARGV[9])
  return {'rotated'}
end
if redis.call('HGET', f, 'prev_' .. ARGV[1]) == ARGV[2] and
   now - tonumber(redis.call('HGET', f, 'rotated_at')) <= tonumber(ARGV[4]) then
  return {'replay', redis.call('HGET', f, 'next')}
end
redis.call('HSET', f, 'revoked', '1')
return {'reuse'}
`

// Credentials a family rotates on.
const (
	credRefresh = "rt"  // a refresh token
	credJTI     = "jti" // an access token's jti
)

// rotateArgs is one rotation of a family.
type rotateArgs struct {
	fid         string
	kind, value string        // the presented credential: credRefresh and the token, or credJTI and the jti
	now         time.Time     // rotation time
	grace       time.Duration // how long the previous credential still answers next
	// The new pair: its refresh token (stored as its hash only), jti and the
	// pair itself as the client gets it, sealed (answered to a replay).
	refreshToken, jti, next string
	exp                     time.Time     // when the family ends unless rotated again
	ttl                     time.Duration // how long Redis keeps it
}

// Outcomes of rotateFamily.
const (
	rotRotated = "rotated" // the credential was current: the new pair is stored
	rotReplay  = "replay"  // the previous credential within grace: next is the last rotation's pair
	rotRevoked = "revoked" // the family was revoked before
	rotReuse   = "reuse"   // a rotated credential presented again: the family is now revoked
	rotMissing = "missing" // no such family (expired or never was)
	rotExpired = "expired" // the family outlived exp
)

// rotateFamily rotates a family (see rotateLua). next is the sealed pair of
// the last rotation for rotReplay, else "".
func (s *store) rotateFamily(ctx context.Context, a rotateArgs) (outcome, next string, err error) {
	value := a.value
	if a.kind == credRefresh {
		value = digest(value)
	}
	rt := digest(a.refreshToken)
	res, err := s.scripts.rotate.Run(ctx, s.rdb, []string{s.keys.family(a.fid), s.keys.refresh(rt)},
		a.kind, value, a.now.UnixMilli(), a.grace.Milliseconds(), rt, a.jti,
		a.next, a.exp.UnixMilli(), a.ttl.Milliseconds(), a.fid,
	).StringSlice()
	if err != nil {
		return "", "", fmt.Errorf("login: rotate refresh family: %w", err)
	}
	if len(res) == 0 {
		return "", "", errors.New("login: rotate refresh family: empty reply")
	}
	if res[0] == rotReplay {
		if len(res) < 2 || res[1] == "" {
			return rotMissing, "", nil
		}
		return rotReplay, res[1], nil
	}
	return res[0], "", nil
}

// revokeLua marks a family revoked without re-creating an expired one.
const revokeLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'revoked', '1') end
return 1
`

// revoke ends family fid (none when "") and, when jti is set, denylists
// that access token for denyTTL (at least a second).
func (s *store) revoke(ctx context.Context, fid, jti string, denyTTL time.Duration) error {
	if denyTTL < time.Second {
		denyTTL = time.Second
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if fid != "" {
			s.scripts.revoke.Eval(ctx, p, []string{s.keys.family(fid)})
		}
		if jti != "" {
			p.Set(ctx, s.keys.deny(jti), "1", denyTTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("login: revoke session: %w", err)
	}
	return nil
}

// accessLive reports whether an access token (jti) of family fid may still
// be used: it is not denylisted and its family exists unrevoked. uid is the
// family's user (internal id) when live.
func (s *store) accessLive(ctx context.Context, jti, fid string) (uid string, live bool, err error) {
	var denied *redis.IntCmd
	var fam *redis.SliceCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		denied = p.Exists(ctx, s.keys.deny(jti))
		fam = p.HMGet(ctx, s.keys.family(fid), "revoked", "user")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", false, fmt.Errorf("login: check revocation: %w", err)
	}
	if denied.Val() > 0 {
		return "", false, nil
	}
	vals := fam.Val()
	if len(vals) != 2 {
		return "", false, nil
	}
	revoked, _ := vals[0].(string)
	uid, _ = vals[1].(string)
	if revoked != "0" || uid == "" {
		return "", false, nil
	}
	return uid, true, nil
}

// --- website OAuth states and sessions ---

// markStateUsed records that the OAuth state id was used, for ttl; first is
// false when it had been used already.
func (s *store) markStateUsed(ctx context.Context, id string, ttl time.Duration) (first bool, err error) {
	first, err = s.rdb.SetNX(ctx, s.keys.stateUsed(digest(id)), "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("login: mark oauth state used: %w", err)
	}
	return first, nil
}

// takeStoredState removes and returns the record of an OAuth state stored
// before states were sealed into their cookie; ok is false when there is
// none (used, expired or never stored).
func (s *store) takeStoredState(ctx context.Context, id string) (raw string, ok bool, err error) {
	raw, err = s.rdb.GetDel(ctx, s.keys.state(digest(id))).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("login: consume oauth state: %w", err)
	}
	return raw, true, nil
}

// startSession stores web session sid of user uid for ttl.
func (s *store) startSession(ctx context.Context, sid, uid string, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.keys.session(digest(sid)), uid, ttl).Err(); err != nil {
		return fmt.Errorf("login: store web session: %w", err)
	}
	return nil
}

// sessionUser returns the user (internal id) of web session sid; ok is false
// when the session is unknown or ended.
func (s *store) sessionUser(ctx context.Context, sid string) (uid string, ok bool, err error) {
	uid, err = s.rdb.Get(ctx, s.keys.session(digest(sid))).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("login: read web session: %w", err)
	}
	return uid, true, nil
}

// endSession removes web session sid.
func (s *store) endSession(ctx context.Context, sid string) error {
	if err := s.rdb.Del(ctx, s.keys.session(digest(sid))).Err(); err != nil {
		return fmt.Errorf("login: end web session: %w", err)
	}
	return nil
}
