package config

import (
	"strings"
	"testing"
	"time"
)

// TestReloadProblems: namespaces and clients may change at runtime; every
// other top-level key is named as needing a restart.
func TestReloadProblems(t *testing.T) {
	base := func() *Config {
		c := Default()
		c.Namespaces = map[string]*Namespace{"prod": {Apps: []*App{{AppID: "wx0123456789abcdef", Secret: "s"}}}}
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   []string // keys named
	}{
		{"apps and clients", func(c *Config) {
			c.Namespaces["staging"] = &Namespace{Apps: []*App{{AppID: "wx0123456789abcdee", Secret: "t"}}}
			c.Namespaces["prod"].Apps[0].Secret = "rotated"
			c.Clients = append(c.Clients, Client{Name: "new", KeySHA256: HashKey("k")})
		}, nil},
		{"listen", func(c *Config) { c.Listen = "127.0.0.1:1" }, []string{"listen"}},
		{"redis password", func(c *Config) { c.Redis.Password = "other" }, []string{"redis"}},
		{"lease and refresh", func(c *Config) {
			c.Leader.LockTTL += time.Second
			c.Refresh.Concurrency++
		}, []string{"leader", "refresh"}},
		{"components and a first refresh-token key", func(c *Config) {
			c.Namespaces["prod"].Components = []*Component{{AppID: "wx0123456789abced", Secret: "s", Token: "t",
				EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}}
			c.OpenPlatform.RefreshTokenEncryptionKey = "a2V5"
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := base()
			tc.change(next)
			var got []string
			for _, p := range ReloadProblems(base(), next) {
				got = append(got, p.Key)
				if !strings.Contains(p.Fix, "restart") {
					t.Errorf("%s: fix %q does not say to restart", p.Key, p.Fix)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("ReloadProblems keys = %v; want %v", got, tc.want)
			}
		})
	}
}

// TestReloadRefreshTokenKey: with components running, a new
// open_platform.refresh_token_encryption_key needs a restart; removing the
// last component with it, or keeping the key, reloads.
func TestReloadRefreshTokenKey(t *testing.T) {
	withComp := func(key string) *Config {
		c := Default()
		c.Namespaces = map[string]*Namespace{"prod": {Components: []*Component{{AppID: "wx0123456789abced", Secret: "s",
			Token: "t", EncodingAESKey: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}}}}
		c.OpenPlatform.RefreshTokenEncryptionKey = Secret(key)
		return c
	}
	if got := ReloadProblems(withComp("k1"), withComp("k1")); len(got) != 0 {
		t.Errorf("same key: %v", got)
	}
	got := ReloadProblems(withComp("k1"), withComp("k2"))
	if len(got) != 1 || got[0].Key != "open_platform.refresh_token_encryption_key" || strings.Contains(got[0].Message+got[0].Fix, "k2") {
		t.Errorf("new key: %+v; want one problem naming the key, not its value", got)
	}
}
