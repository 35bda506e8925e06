package config

import (
	"errors"
	"strings"
	"testing"
)

const (
	testComp  = "wx00000000000000c1" // open/ (componentYAML)
	testComp2 = "wx00000000000000c2" // open/
	testAuthA = "wx0000000000000a01"
	testAuthB = "wx0000000000000b02"
	testApp   = "wx04a7af67c8f47620" // prod/
)

// accessFor compiles one client with the given allow patterns against the
// component configuration.
func accessFor(t *testing.T, allow ...string) *Access {
	t.Helper()
	c := parseComponents(t)
	c.Clients = []Client{{Name: "c", KeySHA256: HashKey("k"), Allow: allow}}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(%v) = %v", allow, err)
	}
	a, err := c.Clients[0].Access(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAccessAuthorizerPatterns: three-part patterns grant authorizers, with
// * in any part; two-part patterns, */* included, grant apps and
// components alike and never an authorizer.
func TestAccessAuthorizerPatterns(t *testing.T) {
	type check struct {
		ns, comp, auth string // auth "": Allows(ns, comp)
		want           bool
	}
	tests := []struct {
		allow  []string
		checks []check
	}{
		{[]string{"*/*"}, []check{
			{"open", testComp, "", true}, {"prod", testApp, "", true},
			{"open", testComp, testAuthA, false},
		}},
		{[]string{"open/" + testComp}, []check{
			{"open", testComp, "", true}, {"open", testComp2, "", false},
			{"open", testComp, testAuthA, false},
		}},
		{[]string{"open/" + testComp + "/" + testAuthA}, []check{
			{"open", testComp, testAuthA, true}, {"open", testComp, testAuthB, false},
			{"open", testComp2, testAuthA, false}, {"prod", testComp, testAuthA, false},
			{"open", testComp, "", false}, // the component token needs the two-part name
		}},
		{[]string{"open/" + testComp + "/*"}, []check{
			{"open", testComp, testAuthA, true}, {"open", testComp, testAuthB, true},
			{"open", testComp2, testAuthA, false}, {"open", testComp, "", false},
		}},
		{[]string{"open/*/" + testAuthB}, []check{
			{"open", testComp, testAuthB, true}, {"open", testComp2, testAuthB, true},
			{"open", testComp, testAuthA, false},
		}},
		{[]string{"*/" + testComp + "/*"}, []check{
			{"open", testComp, testAuthA, true}, {"prod", testComp, testAuthA, true},
			{"open", testComp2, testAuthA, false},
		}},
		{[]string{"*/*/*"}, []check{
			{"open", testComp, testAuthA, true}, {"open", testComp2, testAuthB, true},
			{"open", testComp, "", false}, {"prod", testApp, "", false},
		}},
		{[]string{"*/*", "*/*/*"}, []check{
			{"open", testComp, testAuthA, true}, {"open", testComp, "", true},
		}},
	}
	for _, tt := range tests {
		a := accessFor(t, tt.allow...)
		for _, c := range tt.checks {
			var got bool
			if c.auth == "" {
				got = a.Allows(c.ns, c.comp)
			} else {
				got = a.AllowsAuthorizer(c.ns, c.comp, c.auth)
			}
			if got != c.want {
				t.Errorf("allow %v: %s/%s/%s = %v; want %v", tt.allow, c.ns, c.comp, c.auth, got, c.want)
			}
		}
	}
	if got := accessFor(t, "open/"+testComp+"/*").Namespaces(); len(got) != 1 || got[0] != "open" {
		t.Errorf("Namespaces of open/c/* = %v; want [open]", got)
	}
}

// TestAccessAllowsAuthorizerDoesNotAllocate: like Allows, a miss through
// every combination allocates nothing.
func TestAccessAllowsAuthorizerDoesNotAllocate(t *testing.T) {
	a := accessFor(t, "open/"+testComp+"/"+testAuthA, "*/"+testComp2+"/*")
	ns, comp, auth := "a-namespace-that-is-not-configured", "wx1111111111111111", "wx2222222222222222"
	if n := testing.AllocsPerRun(100, func() { _ = a.AllowsAuthorizer(ns, comp, auth) }); n != 0 {
		t.Errorf("AllowsAuthorizer allocates %v times per call; want 0", n)
	}
}

// TestValidateAuthorizerPatterns: validation accepts the three-part names
// and explains every wrong one.
func TestValidateAuthorizerPatterns(t *testing.T) {
	good := []string{
		"open/" + testComp, "*/" + testComp, "open/" + testComp + "/" + testAuthA, "open/" + testComp + "/*",
		"open/*/" + testAuthA, "*/*/*", "*/" + testComp + "/*", "open/*/*",
	}
	for _, pat := range good {
		accessFor(t, pat)
	}
	bad := []struct{ pat, want string }{
		{"open/" + testComp + "/", "is not a"},
		{"open//" + testAuthA, "is not a"},
		{"open/" + testComp + "/" + testAuthA + "/x", "is not a"},
		{"open/wxNOTHEX/*", "component_appid that is not"},
		{"open/" + testComp + "/nope", "authorizer_appid that is not"},
		{"nope/" + testComp + "/*", "unknown namespace nope"},
		{"prod/" + testComp + "/*", "namespace prod does not configure"},
		{"prod/" + testApp + "/*", "it is an app"},
		{"*/wx0000000000000fff/*", "no namespace configures"},
		{"prod/" + testComp, "namespace prod does not configure"},
		{"*/wx0000000000000fff", "no namespace configures"},
	}
	for _, tt := range bad {
		c := parseComponents(t)
		c.Clients = []Client{{Name: "c", KeySHA256: HashKey("k"), Allow: []string{tt.pat}}}
		err := c.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != 1 {
			t.Errorf("allow %q: Validate = %v; want one problem", tt.pat, err)
			continue
		}
		p := ve.Problems[0]
		if p.Key != "clients[0].allow[0]" || !strings.Contains(p.Message, tt.want) || p.Fix == "" {
			t.Errorf("allow %q: problem %+v; want key clients[0].allow[0], message with %q and a fix", tt.pat, p, tt.want)
		}
	}
}
