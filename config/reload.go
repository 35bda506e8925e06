package config

import (
	"fmt"
	"reflect"
)

// What a running wxbroker takes from a reloaded file: the credentials
// (namespaces with their apps and Open Platform components: added, removed,
// secrets and settings changed; open_platform while no component runs)
// and the clients (keys, allow-lists, admin, invalidation). Everything else
// is bound at start-up to a socket, a Redis connection, a lease or a
// running component, and needs a restart.

// restartKey is a top-level key a reload cannot change, with the Config
// field it is read from.
type restartKey struct {
	key   string
	field func(*Config) any
}

func restartKeys() []restartKey {
	return []restartKey{
		{"instance_id", func(c *Config) any { return c.InstanceID }},
		{"listen", func(c *Config) any { return c.Listen }},
		{"public_listen", func(c *Config) any { return c.PublicListen }},
		{"tls", func(c *Config) any { return c.TLS }},
		{"log", func(c *Config) any { return c.Log }},
		{"redis", func(c *Config) any { return c.Redis }},
		{"leader", func(c *Config) any { return c.Leader }},
		{"wechat", func(c *Config) any { return c.WeChat }},
		{"refresh", func(c *Config) any { return c.Refresh }},
		{"login", func(c *Config) any { return c.Login }},
		{"gateway", func(c *Config) any { return c.Gateway }},
	}
}

// ReloadProblems lists why next cannot replace the running configuration
// cur without a restart: one Problem per top-level key whose value changed
// other than namespaces and clients. Both must be valid configurations
// (Load). An empty result means next can be applied at runtime.
func ReloadProblems(cur, next *Config) []Problem {
	var out []Problem
	for _, k := range restartKeys() {
		if reflect.DeepEqual(k.field(cur), k.field(next)) {
			continue
		}
		out = append(out, Problem{
			Key:     k.key,
			Message: "changed, but it cannot change while wxbroker runs (only namespaces and clients reload)",
			Fix:     fmt.Sprintf("restore the running value of %s and reload, or restart every replica to apply it", k.key),
		})
	}
	// The stored authorizer refresh tokens are sealed with the running key:
	// a replica on another key could not read them while one on the old
	// key writes more. Setting a first key (no component ran) is a reload.
	if len(cur.Components()) > 0 && cur.OpenPlatform.RefreshTokenEncryptionKey != next.OpenPlatform.RefreshTokenEncryptionKey {
		out = append(out, Problem{
			Key:     "open_platform.refresh_token_encryption_key",
			Message: "changed while components run: the stored authorizer refresh tokens are encrypted with the running key",
			Fix: "restore the running key and reload, or restart every replica with the new key (the leader then recovers " +
				"the refresh tokens it cannot decrypt from api_get_authorizer_list)",
		})
	}
	return out
}

// LoginSecretChanged reports whether an app a login flow uses got a new
// secret: the token refresh uses the new one at once, the login endpoints
// only after a restart.
func LoginSecretChanged(cur, next *Config) bool {
	for _, a := range []LoginApp{cur.Login.MiniProgram, {Namespace: cur.Login.Web.Namespace, AppID: cur.Login.Web.AppID}} {
		if !a.configured() {
			continue
		}
		old, ok1 := cur.App(a.Namespace, a.AppID)
		nw, ok2 := next.App(a.Namespace, a.AppID)
		if ok1 && ok2 && old.Secret != nw.Secret {
			return true
		}
	}
	return false
}
