package api

import (
	"strings"
	"testing"

	"github.com/wxbroker/wxbroker/config"
)

// TestKeyringVerifiedKeys checks the keyring's memory of verified keys: a
// key finds its client whether it is remembered or not, a wrong key of the
// same length or a prefix of a good one never does, a keyring built anew
// (a changed set of clients) refuses a key it no longer has, and a long key
// (past the 32 bytes Go converts on the stack) costs no allocation.
func TestKeyringVerifiedKeys(t *testing.T) {
	long := strings.Repeat("k", 72)
	cfg := testConfig()
	cfg.Clients = append(cfg.Clients, config.Client{Name: "long", KeySHA256: config.HashKey(long), Allow: []string{"*/*"}})
	k, err := newKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // first by digest, then remembered
		for key, want := range map[string]string{keyOrder: "order-service", keySRE: "sre", long: "long"} {
			if c := k.lookup(key); c == nil || c.name != want {
				t.Fatalf("lookup(%q) = %v; want client %s", key, c, want)
			}
		}
		for _, bad := range []string{"", keyOrder[:len(keyOrder)-1], keyOrder + "x", strings.Repeat("x", len(keyOrder)), long[:71] + "j"} {
			if c := k.lookup(bad); c != nil {
				t.Fatalf("lookup(%q) = client %s; want none", bad, c.name)
			}
		}
	}
	if m := k.verified.Load(); m == nil || len(*m) != 3 {
		t.Errorf("verified keys = %v; want the 3 keys used", m)
	}
	if n := testing.AllocsPerRun(100, func() { k.lookup(long) }); n != 0 {
		t.Errorf("lookup of a remembered long key allocates %v times; want 0", n)
	}

	cfg.Clients = cfg.Clients[1:] // order-service removed
	k2, err := newKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := k2.lookup(keyOrder); c != nil {
		t.Errorf("removed key: lookup = client %s; want none", c.name)
	}
	if c := k2.lookup(keySRE); c == nil || c.name != "sre" {
		t.Errorf("kept key: lookup = %v; want client sre", c)
	}
}
