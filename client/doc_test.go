package client_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSDKsDocQuotesExample: docs/SDKS.md's Go block is the body of Example
// (example_test.go), which go test runs; the two cannot drift apart.
func TestSDKsDocQuotesExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?s)\nfunc Example\(\) \{\n(.*?)\n\}\n`).FindSubmatch(src)
	if body == nil {
		t.Fatal("example_test.go has no func Example")
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "SDKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)<!-- sdktest: go-client [^\n]*-->\n```go\n(.*?)\n```").FindSubmatch(doc)
	if block == nil {
		t.Fatal("docs/SDKS.md has no ```go block after <!-- sdktest: go-client ... -->")
	}
	if got, want := string(block[1]), string(body[1]); got != want {
		t.Errorf("docs/SDKS.md's Go block differs from func Example in example_test.go; copy it over.\ndoc:\n%s\nexample:\n%s",
			got, strings.TrimSpace(want))
	}
}
