// Package login serves wxbroker's user-login endpoints on public_listen
// (docs/LOGIN.md): WeChat mini-program login (jscode2session), website QR
// login (qrconnect + OAuth code exchange), access JWTs signed with Ed25519
// and published as a JWKS, rotating refresh tokens with reuse detection,
// web sessions, and the user store.
//
// Every piece of state lives in Redis under the hash tag {<redis.key_prefix>}
// with the sub-prefix "login:", so every replica honours a logout or a
// revoked refresh family at once. The store type (store.go) holds every key
// and script; it reaches Redis only through the Redis interface, the
// commands login sends. WeChat session keys and users' OAuth tokens
// are sealed with AES-256-GCM before they reach Redis and never leave the
// server.
package login
