package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	testCompSecret = "component-secret-9d8c7b"
	testMsgToken   = "msgToken4711"
	testAESKey     = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	testRTKey      = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // base64 of 32 bytes
)

// componentYAML is a valid configuration with a namespace of components
// only; the EncodingAESKey and the refresh-token key come from files.
const componentYAML = `
redis: {addrs: ["127.0.0.1:6379"]}
namespaces:
  prod:
    apps:
      - appid: wx04a7af67c8f47620
        secret: s3cr3t-prod
        kind: miniprogram
  open:
    apps: []
    components:
      - component_appid: wx00000000000000c1
        component_secret: ` + testCompSecret + `
        token: ` + testMsgToken + `
        encoding_aes_key_file: aes.key
      - component_appid: wx00000000000000c2
        component_secret_file: c2.secret
        token_file: c2.token
        encoding_aes_key: ` + testAESKey + `
open_platform:
  refresh_token_encryption_key_file: rt.key
`

func parseComponents(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	for name, v := range map[string]string{
		"aes.key": testAESKey + "\n", "c2.secret": "c2-secret-5e6f", "c2.token": "c2token", "rt.key": testRTKey + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := parse([]byte(componentYAML), dir, lookupTestEnv)
	if err != nil {
		t.Fatalf("parse(components) = %v", err)
	}
	return c
}

func TestParseComponents(t *testing.T) {
	c := parseComponents(t)
	refs := c.Components()
	if len(refs) != 2 || refs[0].Namespace != "open" || refs[1].Component.AppID != "wx00000000000000c2" {
		t.Fatalf("Components() = %+v", refs)
	}
	c1, ok := c.Component("open", "wx00000000000000c1")
	if !ok || c1.Secret.Reveal() != testCompSecret || c1.Token.Reveal() != testMsgToken || c1.EncodingAESKey.Reveal() != testAESKey {
		t.Fatalf("Component(open, c1) = %+v, %v", c1, ok)
	}
	if _, ok := c.Component("prod", "wx00000000000000c1"); ok {
		t.Fatal("Component finds a component in the wrong namespace")
	}
	c2, _ := c.Component("open", "wx00000000000000c2")
	if c2.Secret.Reveal() != "c2-secret-5e6f" || c2.Token.Reveal() != "c2token" {
		t.Fatalf("secrets from files: %q, %q", c2.Secret.Reveal(), c2.Token.Reveal())
	}
	key, err := c.OpenPlatform.RefreshTokenKey()
	if err != nil || len(key) != 32 {
		t.Fatalf("RefreshTokenKey() = %d bytes, %v", len(key), err)
	}

	// The crypter of a component opens what it seals.
	cr, err := c1.Crypter()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := cr.Seal([]byte("<xml/>"), "1700000000", "42")
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := cr.Open(sealed.MsgSignature, sealed.Timestamp, sealed.Nonce, sealed.Body); err != nil || string(msg) != "<xml/>" {
		t.Fatalf("Open(Seal) = %q, %v", msg, err)
	}

	var files []string
	for _, f := range c.SecretFiles() {
		files = append(files, f.Key)
	}
	for _, want := range []string{
		"namespaces.open.components[wx00000000000000c1].encoding_aes_key_file",
		"namespaces.open.components[wx00000000000000c2].component_secret_file",
		"namespaces.open.components[wx00000000000000c2].token_file",
		"open_platform.refresh_token_encryption_key_file",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("SecretFiles() = %v; want %s", files, want)
		}
	}
	if inline := c.InlineSecrets(); !slices.Contains(inline, "namespaces.open.components[0].component_secret") {
		t.Errorf("InlineSecrets() = %v; want the inline component_secret", inline)
	}
}

func TestComponentSecretsNeverShown(t *testing.T) {
	c := parseComponents(t)
	secrets := []string{testCompSecret, testMsgToken, testAESKey, testRTKey, "c2-secret-5e6f", "c2token"}
	bad := *c
	bad.OpenPlatform.RefreshTokenEncryptionKey = Secret(testCompSecret)
	badComp := *c.Namespaces["open"].Components[0]
	badComp.EncodingAESKey = Secret(testMsgToken)
	badComp.Token = Secret(testAESKey + "!")
	bad.Namespaces = map[string]*Namespace{"open": {Components: []*Component{&badComp}}}
	verr := bad.Validate()
	if verr == nil {
		t.Fatal("Validate() = nil; want problems with the keys")
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	comps := c.Namespaces["open"].Components
	outputs := map[string]string{
		"Validate()": verr.Error(),
		"%+v":        fmt.Sprintf("%+v %+v %+v", *c, *comps[0], *comps[1]),
		"%#v":        fmt.Sprintf("%#v %#v", *comps[0], c.OpenPlatform),
		"yaml":       string(y),
		"json":       string(j),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows secret %q:\n%s", name, s, out)
			}
		}
	}
	for _, want := range []string{"open_platform.refresh_token_encryption_key", "encoding_aes_key", ".token"} {
		if !strings.Contains(verr.Error(), want) {
			t.Errorf("Validate() = %v; want a problem about %s", verr, want)
		}
	}
}

func TestComponentKeyFileProblems(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "aes.key"), []byte(testAESKey[:40]), 0o600); err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(componentYAML, "token_file: c2.token", "token: both\n        token_file: c2.token", 1)
	_, err := parse([]byte(y), dir, lookupTestEnv)
	if err == nil {
		t.Fatal("parse = nil error")
	}
	for _, want := range []string{
		`namespaces.open.components[0].encoding_aes_key_file = "<secret>": must be 43 characters of base64 (A-Z, a-z, 0-9, + and /); it has 40`,
		"namespaces.open.components[1].token_file",            // both set
		"namespaces.open.components[1].component_secret_file", // missing file
		"open_platform.refresh_token_encryption_key_file",     // missing file
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("parse error:\n%v\nwant it to contain %q", err, want)
		}
	}
}
