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
