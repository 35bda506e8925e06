package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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
	err = s.store.createFamily(ctx, newFamily{fid: fid, uid: uid, sub: sub, flow: flow, refreshToken: rt, jti: jti,
		exp: now.Add(ttl), ttl: ttl})
	if err != nil {
		return pair{}, err
	}
	return pair{AccessToken: at, RefreshToken: rt, ExpiresAt: exp}, nil
}

// Refresh failures.
var (
	errFamilyGone    = errors.New("login: refresh token unknown or expired")
	errFamilyRevoked = errors.New("login: session revoked")
	errFamilyReuse   = errors.New("login: rotated refresh token reused; session revoked")
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
	uid, sub, err := s.store.familyUser(ctx, fid)
	if err != nil {
		return rotation{}, err
	}
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
	outcome, sealed, err := s.store.rotateFamily(ctx, rotateArgs{
		fid: fid, kind: kind, value: value, now: now, grace: s.reuseWindow,
		refreshToken: rt, jti: jti, next: s.seal.Seal(string(blob), "refresh-next|"+fid),
		exp: now.Add(ttl), ttl: ttl,
	})
	if err != nil {
		return rotation{uid: uid}, err
	}
	switch outcome {
	case rotRotated:
		return rotation{pair: next, uid: uid}, nil
	case rotReplay:
		plain, err := s.seal.Open(sealed, "refresh-next|"+fid)
		if err != nil {
			return rotation{uid: uid}, err
		}
		var p pair
		if err := json.Unmarshal([]byte(plain), &p); err != nil {
			return rotation{uid: uid}, fmt.Errorf("login: decode pair: %w", err)
		}
		return rotation{pair: p, uid: uid, replayed: true}, nil
	case rotRevoked:
		return rotation{uid: uid}, errFamilyRevoked
	case rotReuse:
		return rotation{uid: uid}, errFamilyReuse
	default: // missing, expired
		return rotation{uid: uid}, errFamilyGone
	}
}

// familyOf names the family of a refresh token.
func (s *Server) familyOf(ctx context.Context, refreshToken string) (string, error) {
	fid, ok, err := s.store.familyOf(ctx, refreshToken)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errFamilyGone
	}
	return fid, nil
}

// revoke ends a family and, when jti is set, denylists that access token
// until its expiry. Every replica checks both per request.
func (s *Server) revoke(ctx context.Context, fid, jti string, exp time.Time) error {
	return s.store.revoke(ctx, fid, jti, exp.Sub(s.now()))
}

// checkRevoked fails when the access token was logged out or its family
// revoked; otherwise it sets c.uid to the family's (internal) user id.
func (s *Server) checkRevoked(ctx context.Context, c *claims) error {
	uid, live, err := s.store.accessLive(ctx, c.ID, c.SID)
	if err != nil {
		return err
	}
	if !live {
		return errFamilyRevoked
	}
	c.uid = uid
	return nil
}
