package config

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// The login keys are decoded here, for Validate and for the login server
// alike. An error's text completes the key's name ("login.jwt.signing_key is
// not a PEM key") and never shows the value.

// Ed25519Key decodes login.jwt.signing_key: a PKCS#8 PEM Ed25519 private key.
func (j JWT) Ed25519Key() (ed25519.PrivateKey, error) {
	block, _ := pem.Decode([]byte(j.SigningKey.Reveal()))
	if block == nil {
		return nil, errors.New("is not a PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("is not a PKCS#8 private key")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("is a %T, not an Ed25519 key", k)
	}
	return priv, nil
}

// SessionKeyAES decodes login.session_key_encryption_key: the base64
// encoding of a 32-byte AES-256 key.
func (l *Login) SessionKeyAES() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(l.SessionKeyEncryptionKey.Reveal())
	if err != nil || len(b) != 32 {
		return nil, errors.New("is not the base64 encoding of 32 bytes (an AES-256 key)")
	}
	return b, nil
}
