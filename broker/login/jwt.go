package login

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
)

// claims are the claims of an access JWT: sub is the user's public id, sid
// the refresh family the token belongs to (revoked together on logout).
type claims struct {
	jwt.RegisteredClaims
	SID string `json:"sid"`

	// uid is the internal user id, from the refresh family (checkRevoked);
	// never part of the token.
	uid string
}

// signer issues and verifies access JWTs with one Ed25519 key.
type signer struct {
	priv       ed25519.PrivateKey
	pub        ed25519.PublicKey
	kid        string
	issuer     string
	audience   string
	accessTTL  time.Duration
	refreshTTL time.Duration
}

func newSigner(priv ed25519.PrivateKey, issuer string, accessTTL, refreshTTL time.Duration) *signer {
	pub := priv.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	return &signer{
		priv:       priv,
		pub:        pub,
		kid:        base64.RawURLEncoding.EncodeToString(sum[:])[:16],
		issuer:     issuer,
		audience:   issuer,
		accessTTL:  accessTTL,
		refreshTTL: refreshTTL,
	}
}

// sign issues an access token for the user with public id sub in family sid.
func (g *signer) sign(sub, sid, jti string, now time.Time) (string, time.Time, error) {
	exp := now.Add(g.accessTTL)
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    g.issuer,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{g.audience},
			ExpiresAt: jwt.NewNumericDate(exp),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        jti,
		},
		SID: sid,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = g.kid
	s, err := t.SignedString(g.priv)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("login: sign access token: %w", err)
	}
	return s, exp, nil
}

var errBadToken = errors.New("login: access token invalid")

// verify checks signature (EdDSA only, our kid), issuer, audience and expiry
// (with leeway: refresh accepts a recently expired access token).
func (g *signer) verify(token string, now time.Time, leeway time.Duration) (*claims, error) {
	c := &claims{}
	_, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != g.kid {
			return nil, errors.New("unknown kid")
		}
		return g.pub, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(g.issuer),
		jwt.WithAudience(g.audience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(leeway),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if c.Subject == "" || c.ID == "" || c.SID == "" {
		return nil, fmt.Errorf("%w: missing sub, jti or sid", errBadToken)
	}
	return c, nil
}

// jwk is one OKP public key of RFC 8037.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// jwks serves GET /.well-known/jwks.json so services verify access tokens offline.
func (s *Server) jwks(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	return c.JSON(http.StatusOK, map[string][]jwk{"keys": {{
		Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(s.signer.pub),
		Kid: s.signer.kid, Alg: "EdDSA", Use: "sig",
	}}})
}
