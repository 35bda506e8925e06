package login

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// sealer encrypts values at rest with AES-256-GCM. The additional data binds
// a ciphertext to its place (user, app, purpose), so one cannot be moved to
// another record and still open.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("login: aes key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("login: gcm: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// Seal returns base64(nonce || ciphertext).
func (s *sealer) Seal(plaintext, ad string) string {
	return s.seal(base64.RawStdEncoding, plaintext, ad)
}

var errUnseal = errors.New("login: sealed value does not open (wrong key or tampered)")

// Open reverses Seal.
func (s *sealer) Open(sealed, ad string) (string, error) {
	return s.open(base64.RawStdEncoding, sealed, ad)
}

// SealURL is Seal with base64url, for cookie values.
func (s *sealer) SealURL(plaintext, ad string) string {
	return s.seal(base64.RawURLEncoding, plaintext, ad)
}

// OpenURL reverses SealURL.
func (s *sealer) OpenURL(sealed, ad string) (string, error) {
	return s.open(base64.RawURLEncoding, sealed, ad)
}

func (s *sealer) seal(enc *base64.Encoding, plaintext, ad string) string {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	return enc.EncodeToString(s.aead.Seal(nonce, nonce, []byte(plaintext), []byte(ad)))
}

func (s *sealer) open(enc *base64.Encoding, sealed, ad string) (string, error) {
	b, err := enc.DecodeString(sealed)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errUnseal
	}
	n := s.aead.NonceSize()
	pt, err := s.aead.Open(nil, b[:n], b[n:], []byte(ad))
	if err != nil {
		return "", errUnseal
	}
	return string(pt), nil
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// digest is the hex SHA-256 of a bearer secret: what Redis keys hold instead of it.
func digest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
