package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A refresh family is one login: the chain of refresh tokens (and access
// tokens) rotated from it. Redis holds, per family, the hashes of the current
// and previous refresh token, the current and previous access-token jti, the
// pair minted by the last rotation (sealed) and a revoked flag. Refresh token
// keys map a token's SHA-256 to its family; the token itself is never stored.

// pair is what login and refresh hand out.
type pair struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// tokenData is the data of a login or refresh response.
type tokenData struct {
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type"`
	ExpiresIn    int64     `json:"expires_in"`
	RefreshToken string    `json:"refresh_token"`
	User         *userView `json:"user,omitempty"`
}

func (s *Server) tokenData(p pair, u *userView) tokenData {
	in := int64(p.ExpiresAt.Sub(s.now()).Round(time.Second) / time.Second)
	if in < 0 {
		in = 0
	}
	return tokenData{AccessToken: p.AccessToken, TokenType: "Bearer", ExpiresIn: in, RefreshToken: p.RefreshToken, User: u}
}

// issue starts a new family for user u and returns its first pair.
func (s *Server) issue(ctx context.Context, u *user, flow string) (pair, error) {
	now := s.now()
	uid, sub := u.id, u.fields[fieldPublicID]
	fid, rt, jti := randomToken(16), randomToken(32), randomToken(16)
	at, exp, err := s.signer.sign(sub, fid, jti, now)
	if err != nil {
		return pair{}, err
	}
	ttl := s.signer.refreshTTL
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.keys.family(fid), "user", uid, "sub", sub, "flow", flow, "cur_rt", digest(rt), "cur_jti", jti,
			"rotated_at", 0, "exp", now.Add(ttl).UnixMilli(), "revoked", "0")
		p.PExpire(ctx, s.keys.family(fid), ttl)
		p.Set(ctx, s.keys.refresh(digest(rt)), fid, ttl)
		return nil
	})
	if err != nil {
		return pair{}, fmt.Errorf("login: store refresh family: %w", err)
	}
	return pair{AccessToken: at, RefreshToken: rt, ExpiresAt: exp}, nil
}

// rotateScript rotates a family when the presented credential (a refresh
// token hash, or an access token jti) is the current one; answers the pair
// minted by the last rotation when it is the previous one and the rotation
// is recent (concurrent retries); otherwise it is a replay of a rotated
// credential: the whole family is revoked.
//
// KEYS: family, new refresh key. ARGV: kind (rt|jti), value, now ms, grace ms,
// new rt hash, new jti, sealed new pair, new exp ms, ttl ms, family id.
var rotateScript = redis.NewScript(`
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
`)

// Refresh failures.
var (
	errFamilyGone    = errors.New("login: refresh token unknown or expired")
	errFamilyRevoked = errors.New("login: session revoked")
	errFamilyReuse   = errors.New("login: rotated refresh token reused; session revoked")
)

// credential kinds for rotate.
const (
	credRefresh = "rt"
	credJTI     = "jti"
)

// rotation is the outcome of rotate.
type rotation struct {
	pair
	uid string
	// replayed: the credential was the previous one, presented again within
	// the reuse window; the pair is the one its first use got.
	replayed bool
}

// rotate exchanges a credential of family fid for a new pair.
func (s *Server) rotate(ctx context.Context, fid, kind, value string) (rotation, error) {
	vals, err := s.rdb.HMGet(ctx, s.keys.family(fid), "user", "sub").Result()
	if err != nil {
		return rotation{}, fmt.Errorf("login: read refresh family: %w", err)
	}
	uid, _ := vals[0].(string)
	sub, _ := vals[1].(string)
	if uid == "" {
		return rotation{}, errFamilyGone
	}
	if sub == "" { // a family from before public ids
		if sub, err = s.publicIDOf(ctx, uid); err != nil {
			if errors.Is(err, errNoUser) {
				return rotation{uid: uid}, errFamilyGone
			}
			return rotation{uid: uid}, err
		}
	}
	now := s.now()
	rt, jti := randomToken(32), randomToken(16)
	at, exp, err := s.signer.sign(sub, fid, jti, now)
	if err != nil {
		return rotation{uid: uid}, err
	}
	next := pair{AccessToken: at, RefreshToken: rt, ExpiresAt: exp}
	blob, err := json.Marshal(next)
	if err != nil {
		return rotation{uid: uid}, fmt.Errorf("login: encode pair: %w", err)
	}
	ttl := s.signer.refreshTTL
	res, err := rotateScript.Run(ctx, s.rdb, []string{s.keys.family(fid), s.keys.refresh(digest(rt))},
		kind, value, now.UnixMilli(), s.reuseWindow.Milliseconds(), digest(rt), jti,
		s.seal.Seal(string(blob), "refresh-next|"+fid), now.Add(ttl).UnixMilli(), ttl.Milliseconds(), fid,
	).StringSlice()
	if err != nil {
		return rotation{uid: uid}, fmt.Errorf("login: rotate refresh family: %w", err)
	}
	switch res[0] {
	case "rotated":
		return rotation{pair: next, uid: uid}, nil
	case "replay":
		if len(res) < 2 {
			return rotation{uid: uid}, errFamilyGone
		}
		plain, err := s.seal.Open(res[1], "refresh-next|"+fid)
		if err != nil {
			return rotation{uid: uid}, err
		}
		var p pair
		if err := json.Unmarshal([]byte(plain), &p); err != nil {
			return rotation{uid: uid}, fmt.Errorf("login: decode pair: %w", err)
		}
		return rotation{pair: p, uid: uid, replayed: true}, nil
	case "revoked":
		return rotation{uid: uid}, errFamilyRevoked
	case "reuse":
		return rotation{uid: uid}, errFamilyReuse
	default: // missing, expired
		return rotation{uid: uid}, errFamilyGone
	}
}

// familyOf names the family of a refresh token.
func (s *Server) familyOf(ctx context.Context, refreshToken string) (string, error) {
	fid, err := s.rdb.Get(ctx, s.keys.refresh(digest(refreshToken))).Result()
	if errors.Is(err, redis.Nil) {
		return "", errFamilyGone
	}
	if err != nil {
		return "", fmt.Errorf("login: read refresh token: %w", err)
	}
	return fid, nil
}

// revokeScript marks a family revoked without re-creating an expired one.
var revokeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'revoked', '1') end
return 1
`)

// revoke ends a family and, when jti is set, denylists that access token
// until its expiry. Every replica checks both per request.
func (s *Server) revoke(ctx context.Context, fid, jti string, exp time.Time) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if fid != "" {
			revokeScript.Eval(ctx, p, []string{s.keys.family(fid)})
		}
		if jti != "" {
			ttl := exp.Sub(s.now())
			if ttl < time.Second {
				ttl = time.Second
			}
			p.Set(ctx, s.keys.deny(jti), "1", ttl)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("login: revoke session: %w", err)
	}
	return nil
}

// checkRevoked fails when the access token was logged out or its family
// revoked; otherwise it sets c.uid to the family's (internal) user id.
func (s *Server) checkRevoked(ctx context.Context, c *claims) error {
	var denied *redis.IntCmd
	var fam *redis.SliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		denied = p.Exists(ctx, s.keys.deny(c.ID))
		fam = p.HMGet(ctx, s.keys.family(c.SID), "revoked", "user")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("login: check revocation: %w", err)
	}
	if denied.Val() > 0 {
		return errFamilyRevoked
	}
	vals := fam.Val()
	if len(vals) != 2 {
		return errFamilyRevoked
	}
	revoked, _ := vals[0].(string)
	uid, _ := vals[1].(string)
	if revoked != "0" || uid == "" {
		return errFamilyRevoked
	}
	c.uid = uid
	return nil
}
