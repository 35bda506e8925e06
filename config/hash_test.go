package config

import (
	"strings"
	"testing"
)

// TestHash: the same file loaded twice hashes alike (map order plays no
// part); a changed key, a changed secret or a changed client changes the
// hash; the encoding hashed holds no secret in clear; the hash fits a
// float64 exactly.
func TestHash(t *testing.T) {
	load := func() *Config {
		t.Helper()
		c, err := loadTestdata(t, "testdata/good.yaml")
		if err != nil {
			t.Fatalf("parse(good.yaml) = %v", err)
		}
		return c
	}
	a, b := load(), load()
	if a.Hash() != b.Hash() {
		t.Fatalf("same file: hashes %x and %x differ", a.Hash(), b.Hash())
	}
	if h := a.Hash(); h == 0 || h >= 1<<48 || uint64(float64(h)) != h {
		t.Errorf("hash %x: want a non-zero 48-bit integer (exact in a float64 gauge)", h)
	}
	seen := map[uint64]string{a.Hash(): "original"}
	change := func(name string, mod func(c *Config)) {
		t.Helper()
		c := load()
		mod(c)
		h := c.Hash()
		if prev, ok := seen[h]; ok {
			t.Errorf("%s: hash %x equals that of %s; want a different one", name, h, prev)
		}
		seen[h] = name
	}
	change("log level", func(c *Config) { c.Log.Level = "debug" })
	change("redis password", func(c *Config) { c.Redis.Password += "x" })
	change("client allow", func(c *Config) { c.Clients[0].Allow = append(c.Clients[0].Allow, "other/*") })
	change("app secret", func(c *Config) {
		for _, ns := range c.Namespaces {
			for _, app := range ns.Apps {
				app.Secret += "x"
				return
			}
		}
	})

	enc := string(a.canonical())
	for name, secret := range map[string]string{"redis password": a.Redis.Password.Reveal(), "app secret": testEnv["WX_SECRET_PROD"]} {
		if secret == "" {
			t.Fatalf("%s is empty in testdata/good.yaml: the test checks nothing", name)
		}
		if strings.Contains(enc, secret) {
			t.Errorf("the encoding hashed holds the %s in clear", name)
		}
	}
	if !strings.Contains(enc, "secret:") {
		t.Error("no secret digest in the encoding hashed: secrets would not change the hash")
	}
}
