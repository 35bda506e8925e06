package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/labstack/echo/v4"
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

// families are the refresh families and the access tokens they mint:
// issued at login, rotated by refresh, revoked by logout, and checked on
// every request that carries an access token (authenticate).
type families struct {
	store       *store
	signer      *signer
	seal        *sealer
	users       *users // the public id of a family from before public ids
	now         func() time.Time
	reuseWindow time.Duration // login.jwt.refresh_reuse_window
}

// tokenData is the answer of pair p, with u when given.
func (fam *families) tokenData(p pair, u *userView) tokenData {
	in := int64(p.ExpiresAt.Sub(fam.now()).Round(time.Second) / time.Second)
	if in < 0 {
		in = 0
	}
	return tokenData{AccessToken: p.AccessToken, TokenType: "Bearer", ExpiresIn: in, RefreshToken: p.RefreshToken, User: u}
}

// issue starts a new family for user u and returns its first pair.
func (fam *families) issue(ctx context.Context, u *user, flow string) (pair, error) {
	now := fam.now()
	uid, sub := u.id, u.fields[fieldPublicID]
	fid, rt, jti := randomToken(16), randomToken(32), randomToken(16)
	at, exp, err := fam.signer.sign(sub, fid, jti, now)
	if err != nil {
		return pair{}, err
	}
	ttl := fam.signer.refreshTTL
	err = fam.store.createFamily(ctx, newFamily{fid: fid, uid: uid, sub: sub, flow: flow, refreshToken: rt, jti: jti,
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
func (fam *families) rotate(ctx context.Context, fid, kind, value string) (rotation, error) {
	uid, sub, err := fam.store.familyUser(ctx, fid)
	if err != nil {
		return rotation{}, err
	}
	if uid == "" {
		return rotation{}, errFamilyGone
	}
	if sub == "" { // a family from before public ids
		if sub, err = fam.users.publicIDOf(ctx, uid); err != nil {
			if errors.Is(err, errNoUser) {
				return rotation{uid: uid}, errFamilyGone
			}
			return rotation{uid: uid}, err
		}
	}
	now := fam.now()
	rt, jti := randomToken(32), randomToken(16)
	at, exp, err := fam.signer.sign(sub, fid, jti, now)
	if err != nil {
		return rotation{uid: uid}, err
	}
	next := pair{AccessToken: at, RefreshToken: rt, ExpiresAt: exp}
	blob, err := json.Marshal(next)
	if err != nil {
		return rotation{uid: uid}, fmt.Errorf("login: encode pair: %w", err)
	}
	ttl := fam.signer.refreshTTL
	outcome, sealed, err := fam.store.rotateFamily(ctx, rotateArgs{
		fid: fid, kind: kind, value: value, now: now, grace: fam.reuseWindow,
		refreshToken: rt, jti: jti, next: fam.seal.Seal(string(blob), "refresh-next|"+fid),
		exp: now.Add(ttl), ttl: ttl,
	})
	if err != nil {
		return rotation{uid: uid}, err
	}
	switch outcome {
	case rotRotated:
		return rotation{pair: next, uid: uid}, nil
	case rotReplay:
		plain, err := fam.seal.Open(sealed, "refresh-next|"+fid)
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
func (fam *families) familyOf(ctx context.Context, refreshToken string) (string, error) {
	fid, ok, err := fam.store.familyOf(ctx, refreshToken)
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
func (fam *families) revoke(ctx context.Context, fid, jti string, exp time.Time) error {
	return fam.store.revoke(ctx, fid, jti, exp.Sub(fam.now()))
}

// checkRevoked fails when the access token was logged out or its family
// revoked; otherwise it sets c.uid to the family's (internal) user id.
func (fam *families) checkRevoked(ctx context.Context, c *claims) error {
	uid, live, err := fam.store.accessLive(ctx, c.ID, c.SID)
	if err != nil {
		return err
	}
	if !live {
		return errFamilyRevoked
	}
	c.uid = uid
	return nil
}

// authenticate checks the Bearer access token: signature, expiry, logout
// denylist and family revocation, all per request.
func (fam *families) authenticate(c echo.Context) (*claims, error) {
	tok := bearer(c)
	if tok == "" {
		return nil, errUnauthorized("缺少访问令牌 / missing Authorization: Bearer access token")
	}
	cl, err := fam.signer.verify(tok, fam.now(), 0)
	if err != nil {
		return nil, errUnauthorized("访问令牌无效或已过期 / access token invalid or expired")
	}
	if err := fam.checkRevoked(c.Request().Context(), cl); err != nil {
		if errors.Is(err, errFamilyRevoked) {
			return nil, errUnauthorized("登录已失效，请重新登录 / session ended, log in again")
		}
		return nil, err
	}
	return cl, nil
}
