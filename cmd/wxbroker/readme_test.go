package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/internal/logtest"
)

// The README's examples are run as written: a drift between the README and
// the code fails these tests.

// readmePath is the repository's README, from this package's directory.
var readmePath = filepath.Join("..", "..", "README.md")

// readmeMakeRun is the README's `make run ARGS='…'` example.
var readmeMakeRun = regexp.MustCompile(`(?m)^make run ARGS='([^']*)'\s*$`)

// readmeRunArgs returns the flags of the README's `make run ARGS='…'` line.
func readmeRunArgs(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	m := readmeMakeRun.FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s has no line make run ARGS='…'", readmePath)
	}
	return string(m[1])
}

// TestReadmeMakeRunArgs: `make run ARGS='…'` as the README writes it passes
// the flags on to wxbroker dev (before, the target took no flags).
func TestReadmeMakeRunArgs(t *testing.T) {
	args := readmeRunArgs(t)
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make not found (%v): run make test on a machine with make", err)
	}
	cmd := exec.CommandContext(t.Context(), "make", "-n", "-s", "run", "ARGS="+args)
	cmd.Dir = filepath.Dir(readmePath)
	cmd.Env = append(os.Environ(), "GO=go", "MAKEFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run ARGS=%q: %v\n%s", args, err, out)
	}
	want := "go run ./cmd/wxbroker dev " + args
	if !strings.Contains(string(out), want+"\n") {
		t.Errorf("make -n run ARGS=%q printed:\n%s\nwant the line %q", args, out, want)
	}
}

// TestReadmeKillOutsideWalkthrough runs the README's "kill a token outside
// the broker" block line by line against `wxbroker dev`, started with the
// README's make run ARGS: curl lines become the same HTTP requests (curl's
// defaults included), `| grep -E` filters the answer, KEY and SIM come from
// the banner, TOKEN=PASTE-… takes the access_token of the answer before it.
// Before, the walkthrough read a1's token but killed a2's.
func TestReadmeKillOutsideWalkthrough(t *testing.T) {
	steps := readmeBlock(t, "kill-outside")
	args := strings.Fields(readmeRunArgs(t))
	var stderr logtest.Buffer
	banner, _ := runDevInProcess(t, args, &stderr)
	sh := &readmeShell{
		t:    t,
		vars: map[string]string{"KEY": banner.key, "SIM": banner.sim},
		base: banner.base,
	}
	// Every app the block names is the same one: the walkthrough reads,
	// kills and reports one app's token.
	apps := map[string]bool{}
	for _, m := range regexp.MustCompile(`wxd[0-9a-f]{15}`).FindAllString(strings.Join(steps, "\n"), -1) {
		apps[m] = true
	}
	if len(apps) != 1 {
		t.Fatalf("the walkthrough names %d apps %v; want one", len(apps), apps)
	}
	var app string
	for a := range apps {
		app = a
	}

	var reads []readAnswer // token reads, in order
	var killed []string    // tokens killed at the simulator
	for _, line := range steps {
		out, cmd := sh.run(line)
		switch {
		case cmd == "":
		case strings.Contains(cmd, "/access_token/invalidate"):
			var got readAnswer
			mustJSON(t, line, out, &got)
			prev := reads[len(reads)-1]
			if got.AccessToken == "" || got.AccessToken == sh.vars["TOKEN"] || got.Generation != prev.Generation+1 {
				t.Errorf("%s\nanswered %s; want a new token with generation %d", line, out, prev.Generation+1)
			}
		case strings.Contains(cmd, "/access_token"):
			var got readAnswer
			mustJSON(t, line, out, &got)
			if got.AccessToken == "" {
				t.Fatalf("%s\nanswered %s; want a token", line, out)
			}
			for _, k := range killed {
				if got.AccessToken == k {
					t.Errorf("%s\nanswered the killed token %s", line, k)
				}
			}
			reads = append(reads, got)
		case strings.Contains(cmd, "/cgi-bin/stable_token"):
			tok := sh.vars["TOKEN"]
			if tokenValid(t, banner.sim, app, tok) {
				t.Errorf("%s\ndid not kill TOKEN %s: the simulator still accepts it", line, tok)
			}
			killed = append(killed, tok)
		case strings.Contains(cmd, "/cgi-bin/menu/get"):
			if !strings.Contains(out, `"button"`) {
				t.Errorf("%s\nanswered %s; want the menu", line, out)
			}
		case strings.Contains(cmd, "/metrics"):
			for _, name := range []string{"wxbroker_external_invalidation_total", "wxbroker_gateway_retries_total"} {
				re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*appid="` + app + `"[^}]*\} 1$`)
				if !re.MatchString(out) {
					t.Errorf("%s\nprinted:\n%s\nwant %s at 1 for %s", line, out, name, app)
				}
			}
			if !strings.Contains(out, `result="success"`) {
				t.Errorf("%s\nprinted:\n%s\nwant a gateway retry with result=\"success\"", line, out)
			}
		}
		if t.Failed() {
			t.Fatalf("stopped at README line %q; dev's log:\n%s", line, stderr.String())
		}
	}
	if len(killed) != 2 || len(reads) != 2 {
		t.Errorf("the walkthrough killed %d and read %d tokens; want 2 and 2", len(killed), len(reads))
	}
	if !strings.Contains(stderr.String(), "access token invalidated outside the broker") {
		t.Errorf("dev's log lacks \"access token invalidated outside the broker\":\n%s", stderr.String())
	}
}

type readAnswer struct {
	AccessToken string `json:"access_token"`
	Generation  int64  `json:"generation"`
}

func mustJSON(t *testing.T, line, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s\nanswered %q: %v", line, out, err)
	}
}

func tokenValid(t *testing.T, sim, appid, token string) bool {
	t.Helper()
	code, body, err := httpGet(sim+"/sim/token_valid?appid="+appid+"&token="+token, "", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /sim/token_valid: %d %s %v", code, body, err)
	}
	var v struct {
		Valid bool `json:"valid"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	return v.Valid
}

type devBanner struct{ base, sim, key string }

// runDevInProcess runs `wxbroker dev args` in this process until the test ends
// (stderr takes its logs) and returns its banner, and a channel that
// receives its exit code should it stop early.
func runDevInProcess(t *testing.T, args []string, stderr io.Writer) (devBanner, <-chan int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- runDev(ctx, args, &stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("dev did not stop within 15s")
		}
	})
	return waitBanner(t, &stdout, done), done
}

// waitBanner waits for dev's banner and returns its addresses and key.
func waitBanner(t *testing.T, stdout *logtest.Buffer, done <-chan int) devBanner {
	t.Helper()
	b, exited, code := devBannerOrExit(t, stdout, done)
	if exited {
		t.Fatalf("dev exited with %d before its banner:\n%s", code, stdout.String())
	}
	return b
}

// readmeBlock returns the lines of the ```sh block that follows the README
// marker <!-- readme_test: name -->, without comment and empty lines.
func readmeBlock(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	marker := "<!-- readme_test: " + name + " -->"
	var lines []string
	state := 0 // 0: before the marker, 1: before the fence, 2: in the block
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case state == 0 && line == marker:
			state = 1
		case state == 1 && strings.HasPrefix(line, "```"):
			state = 2
		case state == 2 && line == "```":
			return lines
		case state == 2 && line != "" && !strings.HasPrefix(line, "#"):
			lines = append(lines, line)
		}
	}
	t.Fatalf("%s has no ```sh block after %s", readmePath, marker)
	return nil
}

// readmeShell runs README lines: NAME=value assignments, sleep N, and curl
// commands (with -sS, -X, -H, -d and one URL), optionally piped into
// grep -E. It is the small part of sh and curl that the README uses.
type readmeShell struct {
	t    *testing.T
	vars map[string]string
	base string // the dev internal API, in place of http://127.0.0.1:8080
	last string // the previous command's output
}

// readmeBase is the internal API address the README writes.
const readmeBase = "http://127.0.0.1:8080"

// run runs one line and returns its output and the command's URL (empty for
// an assignment or a sleep).
func (sh *readmeShell) run(line string) (out, url string) {
	t := sh.t
	t.Helper()
	pipeline, err := shellWords(line, sh.vars)
	if err != nil {
		t.Fatalf("%s\n%v", line, err)
	}
	words := pipeline[0]
	switch {
	case len(pipeline) == 1 && len(words) == 1 && regexp.MustCompile(`^[A-Z_]+=`).MatchString(words[0]):
		name, value, _ := strings.Cut(words[0], "=")
		switch {
		case strings.HasPrefix(value, "PASTE"):
			var a readAnswer
			mustJSON(t, line, sh.last, &a)
			sh.vars[name] = a.AccessToken
		case sh.vars[name] != "":
			// KEY and SIM: the README shows an example, the banner has the value.
		default:
			sh.vars[name] = value
		}
		return "", ""
	case len(pipeline) == 1 && len(words) == 2 && words[0] == "sleep":
		n, err := strconv.Atoi(words[1])
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		// The simulator's documented minimum gap between two forced
		// refreshes: waited out, not hoped for.
		time.Sleep(time.Duration(n) * time.Second)
		return "", ""
	case words[0] != "curl":
		t.Fatalf("%s\nis not a curl command", line)
	}
	req, err := curlRequest(t.Context(), words[1:], sh.base)
	if err != nil {
		t.Fatalf("%s\n%v", line, err)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s\n%v", line, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("%s\n%v", line, err)
	}
	out = string(body)
	sh.last = out
	for _, filter := range pipeline[1:] {
		if len(filter) != 3 || filter[0] != "grep" || filter[1] != "-E" {
			t.Fatalf("%s\nunsupported pipe %q", line, filter)
		}
		re := regexp.MustCompile(filter[2])
		var kept []string
		for _, l := range strings.Split(out, "\n") {
			if re.MatchString(l) {
				kept = append(kept, l)
			}
		}
		out = strings.Join(kept, "\n")
	}
	return out, req.URL.String()
}

// curlRequest builds the request curl would send for args.
func curlRequest(ctx context.Context, args []string, base string) (*http.Request, error) {
	method, url, data := "", "", ""
	hasData := false
	var headers [][2]string
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("curl %s: missing value", a)
			}
			i++
			return args[i], nil
		}
		var err error
		switch {
		case a == "-sS" || a == "-s" || a == "-S":
		case a == "-X":
			method, err = next()
		case a == "-H":
			var h string
			h, err = next()
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return nil, fmt.Errorf("curl -H %q: not a header", h)
			}
			headers = append(headers, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		case a == "-d":
			data, err = next()
			hasData = true
		case strings.HasPrefix(a, "-"):
			return nil, fmt.Errorf("curl option %s: not supported by this test", a)
		case url != "":
			return nil, fmt.Errorf("curl: a second URL %q", a)
		default:
			url = a
		}
		if err != nil {
			return nil, err
		}
	}
	if url == "" {
		return nil, errors.New("curl: no URL")
	}
	if strings.HasPrefix(url, readmeBase) {
		url = base + strings.TrimPrefix(url, readmeBase)
	}
	if method == "" {
		method = http.MethodGet
		if hasData {
			method = http.MethodPost
		}
	}
	var body io.Reader
	if hasData {
		body = strings.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, fmt.Errorf("curl: %w", err)
	}
	if hasData {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // curl -d's default
	}
	for _, h := range headers {
		req.Header.Set(h[0], h[1])
	}
	return req, nil
}

// shellWords splits a line into the words of each command of a pipeline:
// '…' is literal, "…" and bare words expand $NAME and ${NAME}, adjacent
// parts join into one word, an unquoted # starts a comment.
func shellWords(line string, vars map[string]string) ([][]string, error) {
	var pipeline [][]string
	var words []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	expand := func(s string, i int) (int, error) { // s[i] == '$'
		j := i + 1
		braced := j < len(s) && s[j] == '{'
		if braced {
			j++
		}
		k := j
		for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
			k++
		}
		name := s[j:k]
		if braced {
			if k >= len(s) || s[k] != '}' {
				return 0, fmt.Errorf("unterminated ${ in %q", s)
			}
			k++
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not set", name)
		}
		cur.WriteString(v)
		return k, nil
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
			i++
		case c == '#' && !inWord:
			i = len(line)
		case c == '|':
			flush()
			pipeline = append(pipeline, words)
			words = nil
			i++
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+end])
			inWord = true
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(line) {
					return nil, fmt.Errorf("unterminated \" in %q", line)
				}
				if line[i] == '"' {
					i++
					break
				}
				if line[i] == '$' {
					var err error
					if i, err = expand(line, i); err != nil {
						return nil, err
					}
					continue
				}
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`"\$`+"`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
				i++
			}
		case c == '$':
			inWord = true
			var err error
			if i, err = expand(line, i); err != nil {
				return nil, err
			}
		default:
			inWord = true
			cur.WriteByte(c)
			i++
		}
	}
	flush()
	pipeline = append(pipeline, words)
	for _, w := range pipeline {
		if len(w) == 0 {
			return nil, fmt.Errorf("empty command in %q", line)
		}
	}
	return pipeline, nil
}
